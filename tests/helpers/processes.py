"""The one server launcher: real processes on loopback ports (the service, Prometheus, the camera client), their
logs in files, stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.helpers.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 180  # a cold start on a busy 2-core machine (torch, timm and open_clip imports)
TINY_ENV = {"DCPSFR_MODEL_CONFIG": "tiny", "DCPSFR_DEVICE": "cpu"}


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Process:
    """A started process and its log file (stdout and stderr together)."""

    popen: subprocess.Popen
    log: Path

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the log (all of it when `chars` is 0)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text[-chars:] if chars else text

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> int:
        """Send `sig` (if it still runs) and wait; killed after `timeout_s`. Returns the exit status."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            return self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait(10)


def start_process(command: list[str], env: dict[str, str], log: Path, cwd: Path = REPO) -> Process:
    """Start `command` with exactly `env`, its output into `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as handle:
        popen = subprocess.Popen(command, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT)
    return Process(popen, log)


@dataclass
class ServiceProcess(Process):
    """A `python -m service` process on a loopback port, with an HTTP client for it."""

    port: int = 0
    client: httpx.Client = field(default=None)  # type: ignore[assignment]
    name: str = ""  # how a test tells several apart

    @property
    def url(self) -> str:
        """http://127.0.0.1:<port>"""
        return f"http://127.0.0.1:{self.port}"

    def wait_started(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until /readyz answers anything but "loading" (ready, or unavailable with a reason). With API keys on,
        the unauthenticated answer is only {"ready": bool}: then this waits for ready."""

        def started() -> bool:
            if not self.alive():
                pytest.fail(f"the service exited with {self.popen.returncode}:\n{self.log_tail(0)}")
            body = self.client.get("/readyz").json()
            return body.get("status", "ready" if body["ready"] else "loading") != "loading"

        wait_for(started, f"the service on port {self.port} to start", timeout_s, interval_s=0.05)

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until /readyz answers 200."""

        def ready() -> bool:
            if not self.alive():
                pytest.fail(f"the service exited with {self.popen.returncode}:\n{self.log_tail(0)}")
            return self.client.get("/readyz").status_code == 200

        wait_for(ready, f"the service on port {self.port} to be ready", timeout_s, interval_s=0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> int:
        """Close the client, then stop the process (see Process.stop)."""
        self.client.close()
        return super().stop(sig, timeout_s)


def start_service(
    log_dir: Path,
    env: dict[str, str] | None = None,
    command: list[str] | None = None,
    port: int | None = None,
    name: str = "",
    args: tuple[str, ...] = (),
) -> ServiceProcess:
    """Start the service on a free loopback port: `python -m service` with the `tiny` config on the CPU and its data
    in `log_dir`/data (`env` on top of this process's environment), or exactly `command` and `env` (a container's).
    `args` go on the command line after the host and port. Does not wait."""
    port = port or free_port()
    if command is None:
        command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port), *args]
        env = {**os.environ, **TINY_ENV, "DCPSFR_DATA_DIR": str(log_dir / "data"), **(env or {})}
    process = start_process(command, env or dict(os.environ), log_dir / f"service-{port}.log")
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
    return ServiceProcess(process.popen, process.log, port=port, client=client, name=name)


@contextmanager
def running_service(log_dir: Path, args: tuple[str, ...] = (), **env: str) -> Iterator[ServiceProcess]:
    """A started service (see `start_service`); on exit SIGTERM must end it cleanly: exit status 0 (or -SIGTERM,
    uvicorn re-raising it) and "Application shutdown complete" in its log."""
    service = start_service(log_dir, env, args=args)
    try:
        service.wait_started()
        yield service
    finally:
        returncode = service.stop()
    assert returncode in (0, -signal.SIGTERM), f"the server did not stop cleanly:\n{service.log_tail(0)}"
    assert "Application shutdown complete" in service.log_tail(0)
