"""The operator console: a static page (service/console/) served at `/`, its files at `/ui/<name>`.

The files are public (the API-key middleware lets `/` and `/ui/` through): the page holds no data and asks
for a key itself before it calls the API.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from service.errors import NotFound

CONSOLE_DIR = Path(__file__).resolve().parents[2] / "console"
MEDIA_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
# the page loads nothing from elsewhere; images are the frames (blob:) and the service's PNGs (data:)
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",  # revalidate, so an upgraded service never runs an old app.js
}

router = APIRouter(tags=["console"], include_in_schema=False)


@router.get("/")
def console_page() -> FileResponse:
    """The console page (index.html)."""
    return console_file("index.html")


# relative redirects to the page at `/`, so the console also works behind a proxy that adds a path prefix
@router.get("/ui")
def console_page_redirect() -> RedirectResponse:
    """308 to the page at `/` (a relative redirect, so it works behind a path prefix)."""
    return RedirectResponse("./", status_code=308)


@router.get("/ui/", response_model=None)
@router.get("/ui/{name}", response_model=None)
def console_asset(name: str = "index.html") -> FileResponse | RedirectResponse:
    """A console file from /ui/<name>; /ui/ and /ui/index.html redirect (308) to the page. Raises NotFound (404) for a
    name that is not one of the console's files."""
    if name == "index.html":
        return RedirectResponse("../", status_code=308)
    return console_file(name)


def console_file(name: str) -> FileResponse:
    """One of the console's own files (a flat folder: no path separators, only known types)."""
    path = CONSOLE_DIR / name
    media_type = MEDIA_TYPES.get(path.suffix)
    if media_type is None or "/" in name or name.startswith(".") or not path.is_file():
        raise NotFound(f"no console file {name!r}")
    return FileResponse(path, media_type=media_type, headers=SECURITY_HEADERS)
