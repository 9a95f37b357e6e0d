"""The console's files through the real app: served at `/` and `/ui/<name>`, public with API keys on (the page
asks for the key itself), nothing else of the package reachable, and every file shipped as package data."""

from __future__ import annotations

import fnmatch
import tomllib
from html.parser import HTMLParser

import pytest

from service.api.routes.console import CONSOLE_DIR, MEDIA_TYPES
from tests.helpers.processes import REPO


def test_the_page_is_served_at_the_root(client):
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="ui/app.js">' in page.text  # relative: works behind a path prefix
    assert '<script type="module" src="ui/reports.js">' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]  # nothing from a CDN can run
    for name, media_type in [
        ("app.js", "text/javascript"),
        ("reports.js", "text/javascript"),
        ("style.css", "text/css"),
    ]:
        asset = client.get(f"/ui/{name}")
        assert asset.status_code == 200
        assert asset.headers["content-type"].startswith(media_type)
        assert asset.content == (CONSOLE_DIR / name).read_bytes()


def test_the_page_has_its_own_icon(client):
    """Without a `<link rel="icon">` the browser asks for /favicon.ico: a 404 in its console on every load."""
    assert '<link rel="icon" href="ui/favicon.svg" type="image/svg+xml">' in client.get("/").text
    icon = client.get("/ui/favicon.svg")
    assert icon.status_code == 200
    assert icon.headers["content-type"].startswith("image/svg+xml")
    assert icon.text.startswith("<svg")


@pytest.mark.parametrize("path", ["/ui", "/ui/", "/ui/index.html"])
def test_ui_paths_lead_to_the_page(client, path):
    answer = client.get(path, follow_redirects=False)
    assert answer.status_code == 308
    assert client.get(path).url.path == "/"


@pytest.mark.parametrize("name", ["__init__.py", "..%2Froutes%2Fconsole.py", ".hidden.js", "missing.js", "a/b.css"])
def test_nothing_but_the_console_files_is_served(client, name):
    answer = client.get(f"/ui/{name}")
    assert answer.status_code == 404
    assert "detail" in answer.json()


def test_the_console_is_public_and_the_api_still_needs_the_key(make_client):
    with make_client(api_keys="console-key") as client:
        assert client.get("/").status_code == 200
        assert client.get("/ui/app.js").status_code == 200
        assert client.get("/ui/missing.js").status_code == 404
        assert client.get("/products").status_code == 401
        assert client.get("/openapi.json").status_code == 401
        assert client.get("/uix").status_code == 401  # only /ui and /ui/... are open, not every /ui* path
        assert client.get("/products", headers={"Authorization": "Bearer console-key"}).status_code == 200


def test_console_routes_stay_out_of_the_api_schema(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert not [path for path in paths if path == "/" or path.startswith("/ui")]


def test_every_console_file_is_package_data():
    """A non-editable install (the Docker image) ships only package data: a file the patterns miss is lost."""
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["service"]
    files = sorted(path.name for path in CONSOLE_DIR.iterdir() if path.suffix in MEDIA_TYPES)  # what /ui/ serves
    assert {"index.html", "app.js", "style.css", "favicon.svg"} <= set(files)
    for name in files:
        assert any(fnmatch.fnmatch(f"console/{name}", pattern) for pattern in patterns), name


class _Views(HTMLParser):
    """Each `.view` section of the page with its parent chain (tag#id), and the unclosed elements at the end."""

    VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"})

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.views: dict[str, list[str]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if "view" in (attributes.get("class") or "").split():
            self.views[attributes.get("id") or "?"] = list(self.open)
        if tag not in self.VOID:
            self.open.append(f"{tag}#{attributes.get('id') or ''}")

    def handle_endtag(self, tag: str) -> None:
        if tag not in self.VOID:
            assert self.open and self.open[-1].split("#")[0] == tag, f"</{tag}> closes {self.open[-1:]}"
            self.open.pop()


def test_every_view_is_its_own_section_of_main():
    """A view nested in another (a section left open) stays hidden when the other is: every view must be a child of
    <main> itself, and every element closed."""
    parser = _Views()
    parser.feed((CONSOLE_DIR / "index.html").read_text())
    assert {"view-products", "view-product", "view-review", "view-reports"} <= set(parser.views)
    assert {view: chain[-1] for view, chain in parser.views.items()} == dict.fromkeys(parser.views, "main#main")
    assert parser.open == []
