"""A loopback HTTP file server with Range support, and tiny archives in MVTec AD's and VisA's published layouts.

Used by the fetch and reproduce tests instead of the internet: the archives hold a few generated images per
category (a bright square is the defect, its mask the square), laid out exactly as the real downloads are.
"""

from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image


@dataclass
class Served:
    body: bytes
    truncate_first: int | None = None  # first GET: announce the full length, send this many bytes, drop the line
    ignore_range: bool = False
    gets: int = 0


@dataclass
class LoopbackServer:
    base_url: str
    files: dict[str, Served] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)

    def serve(self, name: str, body: bytes, **options) -> str:
        self.files[f"/{name}"] = Served(body, **options)
        return f"{self.base_url}/{name}"


@contextmanager
def loopback_server():
    """A ThreadingHTTPServer on 127.0.0.1 and a free port, shut down on exit."""
    state = LoopbackServer(base_url="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def do_GET(self) -> None:
            state.requests.append((self.path, self.headers.get("Range")))
            served = state.files.get(self.path)
            if served is None:
                self.send_error(404)
                return
            served.gets += 1
            body, start = served.body, 0
            wanted = self.headers.get("Range")
            if wanted and not served.ignore_range:
                start = int(wanted.removeprefix("bytes=").split("-")[0])
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            rest = body[start:]
            self.send_header("Content-Length", str(len(rest)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if served.truncate_first is not None and served.gets == 1:
                self.wfile.write(rest[: served.truncate_first])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(rest)

    with serving(Handler) as url:
        state.base_url = url
        yield state


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler], daemon_threads: bool = False) -> Iterator[str]:
    """An HTTP server with `handler` on 127.0.0.1 (its base URL) for the duration of the block; with
    `daemon_threads`, closing does not wait for requests still being answered (a stalled response)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = daemon_threads
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)


def closed_port_url(name: str = "archive.tar") -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused: what 'offline' looks like)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- images and archives ----------------------------------------------------------------------------------------


def _image(rng: np.random.Generator, size: int, defect: bool) -> tuple[Image.Image, Image.Image]:
    pixels = rng.integers(60, 120, (size, size, 3), dtype=np.uint8)
    mask = np.zeros((size, size), dtype=np.uint8)
    if defect:
        top, left = rng.integers(2, size // 2, size=2)
        side = size // 4
        pixels[top : top + side, left : left + side] = 250
        mask[top : top + side, left : left + side] = 255
    return Image.fromarray(pixels), Image.fromarray(mask)


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _tar(entries: dict[str, bytes], mode: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def mvtec_archive(categories=("bottle", "screw"), n_train=4, n_good=2, n_bad=2, size=48, seed=0) -> bytes:
    """tar.xz with MVTec AD's layout: <cat>/train/good, test/good, test/<type>, ground_truth/<type>/<n>_mask.png."""
    rng = np.random.default_rng(seed)
    entries = {"license.txt": b"CC BY-NC-SA 4.0 (test archive)\n", "readme.txt": b"test archive\n"}
    for category in categories:
        for n in range(n_train):
            entries[f"{category}/train/good/{n:03d}.png"] = _encoded(_image(rng, size, False)[0], "PNG")
        for n in range(n_good):
            entries[f"{category}/test/good/{n:03d}.png"] = _encoded(_image(rng, size, False)[0], "PNG")
        for n in range(n_bad):
            image, mask = _image(rng, size, True)
            entries[f"{category}/test/broken/{n:03d}.png"] = _encoded(image, "PNG")
            entries[f"{category}/ground_truth/broken/{n:03d}_mask.png"] = _encoded(mask, "PNG")
    return _tar(entries, "w:xz")


def visa_archive(categories=("candle", "pcb1"), n_train=4, n_good=2, n_bad=2, size=48, seed=1) -> bytes:
    """tar with VisA's layout: <cat>/Data/Images/{Normal,Anomaly}/*.JPG, Data/Masks/Anomaly/*.png, split_csv/1cls.csv.

    Masks hold the value 1 (VisA's masks are label images, not 0/255).
    """
    rng = np.random.default_rng(seed)
    entries: dict[str, bytes] = {"LICENSE-DATASET": b"CC BY 4.0 (test archive)\n"}
    rows = ["object,split,label,image,mask"]
    for category in categories:
        for n in range(n_train + n_good):
            name = f"{category}/Data/Images/Normal/{n:04d}.JPG"
            entries[name] = _encoded(_image(rng, size, False)[0], "JPEG")
            rows.append(f"{category},{'train' if n < n_train else 'test'},normal,{name},")
        for n in range(n_bad):
            image, mask = _image(rng, size, True)
            name = f"{category}/Data/Images/Anomaly/{n:03d}.JPG"
            mask_name = f"{category}/Data/Masks/Anomaly/{n:03d}.png"
            entries[name] = _encoded(image, "JPEG")
            entries[mask_name] = _encoded(Image.fromarray((np.asarray(mask) > 0).astype(np.uint8)), "PNG")
            rows.append(f"{category},test,anomaly,{name},{mask_name}")
    entries["split_csv/1cls.csv"] = ("\n".join(rows) + "\n").encode()
    return _tar(entries, "w")


def evil_archive() -> bytes:
    """A tar whose second member climbs out of the extraction folder with `../`."""
    return _tar({"bottle/train/good/000.png": b"x", "../escaped.txt": b"gotcha"}, "w")
