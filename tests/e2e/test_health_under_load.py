"""`python -m service` as a real process: /healthz, /readyz and /metrics answer fast while a saturating inspect
load keeps the decode and encode pools and the model busy."""

from __future__ import annotations

import io
import json
import statistics
import subprocess
import sys
import textwrap
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.helpers.processes import running_service

pytestmark = pytest.mark.e2e

PROBES = ("/healthz", "/readyz", "/metrics")
WINDOWS = 5  # load windows: the bound is checked on the median window, so one hiccup of a busy host is no fail
WINDOW_S = 2.0
PROBE_EVERY_S = 0.02
P99_BOUND_MS = 100.0  # health routes' p99 under saturating inspect load
IDLE_FACTOR = 10.0
LOAD_CLIENTS = 6  # more than the batch the worker takes at once: the queue never runs dry

# Runs in its own process (its threads must not share the probing process's GIL): N clients post inspects
# back to back for `duration` seconds; prints a JSON summary of status codes.
LOAD_SCRIPT = textwrap.dedent(
    """
    import json, sys, threading, time, httpx
    url, frame_path, clients, duration = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    frame = open(frame_path, "rb").read()
    codes, lock, end = {}, threading.Lock(), time.monotonic() + duration
    def run():
        with httpx.Client(base_url=url, timeout=120) as client:
            while time.monotonic() < end:
                answer = client.post("/inspect", data={"product_id": "p"}, files=[("images", ("f.png", frame))])
                with lock:
                    codes[answer.status_code] = codes.get(answer.status_code, 0) + 1
    threads = [threading.Thread(target=run) for _ in range(clients)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    print(json.dumps(codes))
    """
)


def frame_png(width: int, height: int, seed: int = 0) -> bytes:
    """A noisy frame: large enough that decoding, the forward and encoding its maps all take real time."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def probe_windows(client: httpx.Client, n_windows: int) -> list[float]:
    """p99 latency (ms) of the health routes in each window of WINDOW_S seconds."""
    p99s = []
    for _ in range(n_windows):
        latencies, end = [], time.monotonic() + WINDOW_S
        while time.monotonic() < end:
            for path in PROBES:
                start = time.perf_counter()
                assert client.get(path).status_code == 200
                latencies.append((time.perf_counter() - start) * 1000.0)
            time.sleep(PROBE_EVERY_S)
        p99s.append(float(np.percentile(latencies, 99)))
    return p99s


@pytest.mark.soak
@pytest.mark.alone
def test_health_routes_stay_fast_under_saturating_inspect_load(tmp_path):
    frame = tmp_path / "frame.png"
    frame.write_bytes(frame_png(800, 600))
    with running_service(tmp_path, DCPSFR_DATA_DIR=str(tmp_path / "data")) as service:
        client = service.client
        refs = [("images", (f"r{i}.png", frame_png(320, 240, seed=i))) for i in range(2)]
        assert client.post("/products/p/references", files=refs).status_code == 201
        idle = probe_windows(client, 2)
        duration = WINDOWS * WINDOW_S + 6.0  # the load runs past the last window
        url = str(client.base_url).rstrip("/")
        load = subprocess.Popen(
            [sys.executable, "-c", LOAD_SCRIPT, url, str(frame), str(LOAD_CLIENTS), str(duration)],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(3.0)  # let the load saturate the service
        loaded = probe_windows(client, WINDOWS)
        out, _ = load.communicate(timeout=duration + 300)
        codes = {int(k): v for k, v in json.loads(out).items()}
    busy = statistics.median(loaded)
    # A shared 2-core host (load average ~19 while measured) alone puts the loaded p99 at 100-180 ms; a host slow
    # when idle widens the bound. A health route queued behind decoding or the forward would take seconds here.
    bound = max(P99_BOUND_MS, IDLE_FACTOR * statistics.median(idle))
    print(f"\nhealth p99 per window, ms: idle {idle}, loaded {loaded}; inspect status codes {codes}")
    assert sum(codes.values()) >= 8 and codes.get(200, 0) > 0, codes  # the load really ran
    assert not any(code >= 500 for code in codes), codes
    assert busy < bound, f"median window p99 {busy:.1f} ms >= {bound:.1f} ms (idle {idle}, loaded {loaded})"
