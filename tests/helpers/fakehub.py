"""A local imitation of the Hugging Face hub on loopback, for the weight fetch.

It answers as the hub does for LFS files: `HEAD|GET /<org>/<repo>/resolve/<revision>/<file>` -> 302 to a CDN path
with `X-Linked-Etag` (the sha256), `X-Linked-Size` and `X-Repo-Commit`; `GET /cdn/<sha256>` -> the bytes, with
`Range` (206). Unknown repositories/files answer 404 with the hub's `X-Error-Code`; a private repository without
the right bearer token answers 401. Faults on the CDN, for tests: `reset_after` (send that many bytes of the next
body, then cut the connection), `stall_after` (send that many bytes, then nothing until `release()` or close),
`fail_status` (answer the next N requests with a status).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from tests.helpers.loopback import serving

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Faults:
    """What goes wrong on the CDN next (each used once, then cleared)."""

    reset_after: int | None = None
    stall_after: int | None = None
    fail_status: list[int] = field(default_factory=list)
    advertise_sha256: str | None = None  # a lie in X-Linked-Etag (None: the true sum)


class FakeHub:
    """The server's state: files by (repo, filename), private repos and their token, faults, and a request log."""

    def __init__(self) -> None:
        self.files: dict[tuple[str, str], bytes] = {}
        self.private: dict[str, str] = {}  # repo -> the token that reads it
        self.faults = Faults()
        self.requests: list[tuple[str, str, str]] = []  # (method, path, Range header)
        self.unstall = threading.Event()
        self.url = ""
        self.cdn_url = ""  # where the redirects point ("" : this server)

    def add(self, repo: str, filename: str, data: bytes) -> str:
        """Publish `data` as `repo/filename`; returns its sha256."""
        self.files[(repo, filename)] = data
        return hashlib.sha256(data).hexdigest()

    def by_sum(self, digest: str) -> bytes | None:
        """The published bytes with this sha256."""
        return next((d for d in self.files.values() if hashlib.sha256(d).hexdigest() == digest), None)

    def release(self) -> None:
        """Let a stalled body go on."""
        self.unstall.set()

    def cdn_gets(self) -> list[str]:
        """The Range headers of the CDN GETs so far ("" for none)."""
        return [rng for method, path, rng in self.requests if method == "GET" and path.startswith("/cdn/")]


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def _answer(self, body: bool) -> None:
            hub.requests.append((self.command, self.path, self.headers.get("Range", "")))
            if self.path.startswith("/cdn/"):
                self._cdn(self.path.split("/")[2].split("?")[0], body)
                return
            parts = self.path.split("/")
            if len(parts) < 6 or parts[3] != "resolve":
                self._status(404, {"X-Error-Code": "RepoNotFound"})
                return
            repo, filename = f"{parts[1]}/{parts[2]}", "/".join(parts[5:])
            token = hub.private.get(repo)
            if token is not None and self.headers.get("Authorization") != f"Bearer {token}":
                self._status(401, {})
                return
            if not any(r == repo for r, _ in hub.files):
                self._status(404, {"X-Error-Code": "RepoNotFound"})
                return
            data = hub.files.get((repo, filename))
            if data is None:
                self._status(404, {"X-Error-Code": "EntryNotFound"})
                return
            digest = hashlib.sha256(data).hexdigest()
            advertised = hub.faults.advertise_sha256 or digest
            self._status(
                302,
                {
                    "Location": f"{hub.cdn_url or hub.url}/cdn/{digest}?signed=1",
                    "X-Linked-Etag": f'"{advertised}"',
                    "X-Linked-Size": str(len(data)),
                    "X-Repo-Commit": COMMIT,
                    "ETag": '"not-the-sum"',
                },
            )

        def _cdn(self, digest: str, body: bool) -> None:
            data = hub.by_sum(digest)
            if data is None:
                self._status(404, {})
                return
            if hub.faults.fail_status and body:
                self._status(hub.faults.fail_status.pop(0), {})
                return
            start = 0
            rng = self.headers.get("Range", "")
            if rng.startswith("bytes="):
                start = int(rng[6:].split("-")[0])
            chunk = data[start:]
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(chunk)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if not body:
                return
            reset, stall = hub.faults.reset_after, hub.faults.stall_after
            if reset is not None:
                hub.faults.reset_after = None
                self.wfile.write(chunk[:reset])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)  # cut mid-body, as a reset network does
                return
            if stall is not None:
                hub.faults.stall_after = None
                self.wfile.write(chunk[:stall])
                self.wfile.flush()
                hub.unstall.wait(60)
                chunk = chunk[stall:]
            self.wfile.write(chunk)

        def _status(self, status: int, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in headers.items():
                if value:
                    self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


@contextmanager
def fake_hub() -> Iterator[FakeHub]:
    """A FakeHub serving on 127.0.0.1 (its `url`) for the duration of the block."""
    hub = FakeHub()
    with serving(_handler(hub), daemon_threads=True) as url:
        hub.url = url
        try:
            yield hub
        finally:
            hub.release()  # a stalled response ends before the server closes


# --- what the imitation publishes: small files under the real repository names ------------------------------------

DINO = {"repo": "timm/vit_small_patch14_dinov2.lvd142m", "filename": "model.safetensors",
        "revision": "cace07adb9220de26eb51226ecbef6d04d35defe"}  # fmt: skip
CLIP = {"repo": "timm/vit_base_patch16_clip_224.openai", "filename": "open_clip_model.safetensors", "revision": "main"}


def tiny_backbone_bytes() -> dict[str, bytes]:
    """The tiny config's backbones (random init, seeded) as safetensors bytes by role: small stand-ins for the
    published files, loadable by a config with tiny's architecture."""
    from safetensors.torch import save

    from model import create_detector

    network = create_detector("tiny", device="cpu", heads_file="random").network
    state = {"dino": network.dino.model.state_dict(), "clip": network.clip.model.state_dict()}
    return {role: save({k: v.detach().contiguous().clone() for k, v in s.items()}) for role, s in state.items()}


def publish(hub: FakeHub, weights_dir, files: dict[str, bytes], config: str = "tinyfile", pins=None, hubs=None):
    """Publish `files` (by role) on `hub` under the real edge repository names and write a manifest for `config`
    into `weights_dir` naming them (`pins`: sha256 by role; `hubs`: other repo/filename/revision by role)."""
    import json

    hubs = {"dino": DINO, "clip": CLIP, **(hubs or {})}
    entries = {}
    for role, data in files.items():
        real = DINO if role == "dino" else CLIP
        hub.add(real["repo"], real["filename"], data)
        entries[role] = {
            "file": f"{config}/{role}.safetensors",
            "hub": hubs[role],
            "sha256": (pins or {}).get(role),
            "source": {"library": "timm" if role == "dino" else "open_clip", "model": role},
            "license": "test",
            "size_mb": len(data) / 1e6,
        }
    weights_dir.mkdir(parents=True, exist_ok=True)
    (weights_dir / "manifest.json").write_text(json.dumps({"configs": {config: entries}}))
    return entries
