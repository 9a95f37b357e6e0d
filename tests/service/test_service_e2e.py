"""End to end: `python -m service` as a real process on a loopback port, driven over HTTP like curl would."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import decode_png

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def server(tmp_path: Path, **env: str) -> Iterator[tuple[httpx.Client, Path]]:
    """A running service (stopped with SIGTERM on exit, which must end it cleanly); yields a client and its log."""
    port = free_port()
    log = tmp_path / f"server-{port}.log"
    environment = {**os.environ, "DCPSFR_MODEL_CONFIG": "tiny", "DCPSFR_DEVICE": "cpu", **env}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO,
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            wait_until_started(client, process, log)
            yield client, log
    finally:
        process.terminate()
        returncode = process.wait(60)
    # uvicorn shuts down gracefully, then re-raises SIGTERM (exit status -15) so supervisors see why it ended
    assert returncode in (0, -signal.SIGTERM), f"the server did not stop cleanly:\n{log.read_text()}"
    assert "Application shutdown complete" in log.read_text()


def wait_until_started(client: httpx.Client, process: subprocess.Popen, log: Path) -> None:
    """Until /readyz answers anything but 'loading' (ready, or unavailable with a reason). With API keys on,
    the unauthenticated answer is only {"ready": bool}: then this waits for ready."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the server exited:\n{log.read_text()}"
        try:
            body = client.get("/readyz").json()
            if body.get("status", "ready" if body["ready"] else "loading") != "loading":
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"the server did not start in {START_TIMEOUT_S} s:\n{log.read_text()}")


def files(*paths: Path) -> list:
    return [("images", (path.name, path.read_bytes(), "image/png")) for path in paths]


def inspect_scores(client: httpx.Client, images: list[Path]) -> list[float]:
    answer = client.post("/inspect", data={"product_id": "bottle"}, files=files(*images))
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert decode_png(results[0]["mask_png"]).shape == (900, 900)  # the bottle images' own size
    return [r["score"] for r in results]


def test_upload_inspect_restart_inspect_gives_the_same_scores(tmp_path, bottle_dir):
    data_dir = str(tmp_path / "data")
    references = sorted((bottle_dir / "train" / "good").glob("*.png"))[:2]
    queries = [bottle_dir / "test" / "broken_large" / "000.png", bottle_dir / "test" / "good" / "000.png"]
    with server(tmp_path, DCPSFR_DATA_DIR=data_dir) as (client, _):
        assert client.get("/healthz").json() == {"status": "ok"}
        created = client.post("/products/bottle/references", files=files(*references))
        assert created.status_code == 201, created.text
        assert created.json()["n_references"] == 2
        before = inspect_scores(client, queries)
        as_png = client.post("/inspect?format=png", data={"product_id": "bottle"}, files=files(queries[0]))
        assert as_png.headers["content-type"] == "image/png"
        assert float(as_png.headers["X-Anomaly-Score"]) == pytest.approx(before[0], rel=1e-5)
    with server(tmp_path, DCPSFR_DATA_DIR=data_dir) as (client, _):
        assert client.get("/readyz").json()["products"] == 1
        assert client.get("/products/bottle").json()["version"] == 1
        after = inspect_scores(client, queries)
    assert after == pytest.approx(before, rel=1e-5)


def test_missing_weights_start_without_a_traceback(tmp_path):
    env = {
        "DCPSFR_MODEL_CONFIG": "edge",
        "DCPSFR_WEIGHTS_DIR": str(tmp_path / "empty"),
        "DCPSFR_DATA_DIR": str(tmp_path),
    }
    with server(tmp_path, **env) as (client, log):
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert "python -m model.weights fetch edge" in ready.json()["detail"]
        inspect = client.post("/inspect", data={"product_id": "bottle"}, files=[("images", ("a.png", b"x"))])
        assert inspect.status_code == 503
        assert inspect.json()["detail"] == ready.json()["detail"]
    text = log.read_text()
    assert "Traceback" not in text
    assert sum("model weights missing" in line for line in text.splitlines()) == 1
