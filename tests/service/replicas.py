"""Real `python -m service` processes on loopback ports, several sharing one data dir (the `tiny` config)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.service.test_service_e2e import REPO, START_TIMEOUT_S, free_port

POLL_S = 0.2  # DCPSFR_STORE_POLL_S of the replicas in these tests
SETTLE_TIMEOUT_S = 60  # generous bound for "within the poll interval" on a busy 2-core machine


class Replica:
    def __init__(self, name: str, data_dir: Path, log_dir: Path, **env: str) -> None:
        self.name = name
        self.port = free_port()
        self.log = log_dir / f"replica-{name}-{self.port}.log"
        environment = {
            **os.environ,
            "DCPSFR_MODEL_CONFIG": "tiny",
            "DCPSFR_DEVICE": "cpu",
            "DCPSFR_DATA_DIR": str(data_dir),
            "DCPSFR_STORE_POLL_S": str(POLL_S),
            **env,
        }
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=REPO,
                env=environment,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=120)

    def wait_ready(self) -> float:
        """Seconds from now until /readyz answers 200."""
        start = time.monotonic()
        while time.monotonic() - start < START_TIMEOUT_S:
            assert self.process.poll() is None, f"replica {self.name} exited:\n{self.log.read_text()}"
            try:
                if self.client.get("/readyz").status_code == 200:
                    return time.monotonic() - start
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"replica {self.name} not ready in {START_TIMEOUT_S} s:\n{self.log.read_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)


def wait_until(condition: Callable[[], object], what: str, timeout_s: float = SETTLE_TIMEOUT_S) -> float:
    """Seconds until `condition()` is truthy (polled every 20 ms); fails after `timeout_s`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if condition():
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout_s} s: {what}")
