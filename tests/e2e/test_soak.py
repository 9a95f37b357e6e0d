"""Soak: a real `python -m service` process (loopback, `tiny` config) under a bounded mixed load from a few
concurrent keep-alive clients: inspections, reference uploads, deletes, reads, and bad inputs (a cut JPEG, a cut
PNG, a 0-byte file, text, a wrong field, an unknown product, too many images). No answer may be a 5xx, each
request gets the status its kind calls for, and the server's RSS, open file descriptors and threads stay flat
from the end of a warm-up to the end of the run. The figures are printed (`pytest -s`) and quoted in the
README's "Fuzzing and soak" section."""

from __future__ import annotations

import io
import random
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from PIL import Image

from tests.helpers.processes import running_service

pytestmark = [pytest.mark.e2e, pytest.mark.soak]

CLIENTS = 4
WARMUP_S = 35.0  # RSS still climbs for ~30 s of this load (allocator and caches filling), then stays flat
SOAK_S = 40.0
SAMPLE_EVERY_S = 1.0
SHARED = "soak"  # uploaded once, never deleted
CONTENDED = "soak-contended"  # uploaded and deleted by every client at once
RSS_TOLERANCE = 40 * 2**20  # RSS may grow this much after the warm-up (steps of up to ~15 MiB come and go)
FD_TOLERANCE = 6  # a keep-alive connection or two being replaced at the moment of a sample
THREAD_TOLERANCE = 4


def image(seed: int, size: tuple[int, int] = (640, 480), fmt: str = "PNG") -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)  # (H, W, 3)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


GOOD = [image(seed) for seed in range(4)]
CUT_JPEG = image(9, fmt="JPEG")[:300]
CUT_PNG = GOOD[0][:20]


def upload(client: httpx.Client, product: str, *payloads: bytes, field_name: str = "images") -> httpx.Response:
    files = [(field_name, (f"ref{i}.png", data, "image/png")) for i, data in enumerate(payloads)]
    return client.post(f"/products/{product}/references", files=files)


def inspect(client: httpx.Client, product: str, *payloads: bytes, field_name: str = "images") -> httpx.Response:
    files = [(field_name, (f"frame{i}.png", data, "image/png")) for i, data in enumerate(payloads)]
    return client.post("/inspect", data={"product_id": product}, files=files)


# (weight, name, expected statuses, request): one kind of request and the statuses it may get
Request = Callable[[httpx.Client, str, random.Random], httpx.Response]
KINDS: list[tuple[int, str, set[int], Request]] = [
    (30, "inspect", {200}, lambda c, own, rng: inspect(c, SHARED, rng.choice(GOOD))),
    (4, "inspect batch", {200}, lambda c, own, rng: inspect(c, SHARED, *rng.sample(GOOD, 3))),
    (6, "inspect own", {200, 404}, lambda c, own, rng: inspect(c, own, rng.choice(GOOD))),
    (2, "upload own", {201}, lambda c, own, rng: upload(c, own, *rng.sample(GOOD, 2))),
    (3, "delete own", {204, 404}, lambda c, own, rng: c.delete(f"/products/{own}")),
    (1, "upload contended", {201, 409}, lambda c, own, rng: upload(c, CONTENDED, rng.choice(GOOD))),
    (2, "delete contended", {204, 404}, lambda c, own, rng: c.delete(f"/products/{CONTENDED}")),
    (4, "list", {200}, lambda c, own, rng: c.get("/products")),
    (3, "show", {200, 404}, lambda c, own, rng: c.get(f"/products/{rng.choice([SHARED, own, CONTENDED])}")),
    (3, "health", {200}, lambda c, own, rng: c.get(rng.choice(["/healthz", "/readyz", "/metrics"]))),
    (4, "cut JPEG", {400}, lambda c, own, rng: inspect(c, SHARED, CUT_JPEG)),
    (3, "cut PNG", {400}, lambda c, own, rng: inspect(c, SHARED, CUT_PNG)),
    (3, "0-byte file", {400}, lambda c, own, rng: inspect(c, SHARED, b"")),
    (3, "text", {415}, lambda c, own, rng: inspect(c, SHARED, b"not an image at all")),
    (3, "wrong field", {422}, lambda c, own, rng: inspect(c, SHARED, GOOD[0], field_name="image")),
    (2, "unknown product", {404}, lambda c, own, rng: inspect(c, "no-such-product", GOOD[0])),
    (2, "bad product id", {422}, lambda c, own, rng: c.get("/products/bad id!")),
    (1, "too many images", {413}, lambda c, own, rng: inspect(c, SHARED, *[GOOD[0]] * 17)),
    (2, "cut reference", {400}, lambda c, own, rng: upload(c, own, GOOD[1], CUT_JPEG)),
]


@dataclass
class Tally:
    statuses: Counter = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, status: int, expected: set[int], body: str) -> None:
        with self.lock:
            self.statuses[status] += 1
            if status not in expected:
                self.unexpected.append(f"{kind}: {status} (expected {sorted(expected)}): {body[:200]}")


def run_client(url: str, index: int, stop: threading.Event, tally: Tally) -> None:
    rng = random.Random(index)  # a fixed sequence of kinds per client
    weights = [kind[0] for kind in KINDS]
    own = f"soak-client{index}"
    with httpx.Client(base_url=url, timeout=120) as client:  # one keep-alive connection, bad inputs included
        while not stop.is_set():
            _, name, expected, send = rng.choices(KINDS, weights)[0]
            response = send(client, own, rng)
            tally.add(name, response.status_code, expected, response.text)


@dataclass
class Sample:
    rss: int
    fds: int
    threads: int


def sample(process: psutil.Process) -> Sample:
    return Sample(process.memory_info().rss, process.num_fds(), process.num_threads())


def server_process(port: int) -> psutil.Process:
    """This test's `python -m service` child listening on `port`."""
    for child in psutil.Process().children(recursive=True):
        if "service" in child.cmdline() and str(port) in child.cmdline():
            return child
    raise AssertionError(f"no service process on port {port}")


def median_of(samples: list[Sample], attribute: str) -> float:
    return statistics.median(getattr(s, attribute) for s in samples)


def test_soak_keeps_memory_fds_and_threads_flat_and_never_answers_5xx(tmp_path: Path):
    # The records go to the database and the spool on disk: what still grows in memory after the warm-up is a leak.
    with running_service(tmp_path, DCPSFR_DATA_DIR=str(tmp_path / "data")) as service:
        client = service.client
        log = service.log
        process = server_process(int(str(client.base_url).rsplit(":", 1)[1].strip("/")))
        assert upload(client, SHARED, GOOD[0], GOOD[1]).status_code == 201
        tally, stop = Tally(), threading.Event()
        url = str(client.base_url)
        threads = [threading.Thread(target=run_client, args=(url, i, stop, tally)) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        samples: list[tuple[float, Sample]] = []
        start = time.monotonic()
        try:
            while (elapsed := time.monotonic() - start) < WARMUP_S + SOAK_S:
                samples.append((elapsed, sample(process)))
                time.sleep(SAMPLE_EVERY_S)
        finally:
            stop.set()
            for thread in threads:
                thread.join(180)
        assert client.get("/healthz").status_code == 200
        server_log = log.read_text()

    soaked = [s for t, s in samples if t >= WARMUP_S]
    first, last = soaked[:5], soaked[-5:]  # medians of 5 samples: one busy moment does not decide
    requests = sum(tally.statuses.values())
    server_errors = sum(n for status, n in tally.statuses.items() if status >= 500)
    figures = {
        "requests": requests,
        "statuses": dict(sorted(tally.statuses.items())),
        "5xx": server_errors,
        "rss_mib_after_warmup": round(median_of(first, "rss") / 2**20, 1),
        "rss_mib_end": round(median_of(last, "rss") / 2**20, 1),
        "rss_mib_max": round(max(s.rss for s in soaked) / 2**20, 1),
        "fds": (median_of(first, "fds"), median_of(last, "fds")),
        "threads": (median_of(first, "threads"), median_of(last, "threads")),
    }
    print("rss MiB:", [(round(t), round(s.rss / 2**20)) for t, s in samples])
    print(f"\nsoak ({CLIENTS} clients, {WARMUP_S:.0f} s warm-up + {SOAK_S:.0f} s): {figures}")
    assert server_errors == 0 and not tally.unexpected, "\n".join(tally.unexpected[:20])
    assert requests > 50, f"only {requests} requests: the load did not run"
    assert "Traceback" not in server_log, server_log[-5000:]
    assert median_of(last, "rss") - median_of(first, "rss") < RSS_TOLERANCE, figures
    assert median_of(last, "fds") - median_of(first, "fds") <= FD_TOLERANCE, figures
    assert median_of(last, "threads") - median_of(first, "threads") <= THREAD_TOLERANCE, figures
