"""Real processes for the deployment tests: the service started with exactly the container's command and
environment (read from the Dockerfile and compose files; `tiny` config, temp dirs for /data and
/app/weights, a free port), and a real Prometheus server on loopback scraping it with the deployed config."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.deploy.deployfiles import COMPOSE, COMPOSE_CPU, PROMETHEUS_CONFIG, REPO, container_process

CAMERA_KEY = "camera-key"
PROMETHEUS_KEY = "prometheus-key"
COMPOSE_ENV = {  # what an operator puts in .env for this test deployment
    "DCPSFR_MODEL_CONFIG": "tiny",
    "DCPSFR_API_KEYS": f"{CAMERA_KEY},{PROMETHEUS_KEY}",
    "DCPSFR_METRICS_API_KEY": PROMETHEUS_KEY,
}
START_TIMEOUT_S = 180
CONTAINER_PATHS = {"DCPSFR_DATA_DIR": "data", "DCPSFR_WEIGHTS_DIR": "weights"}  # container path -> a temp folder


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.2) -> Any:
    """Poll until `condition()` is truthy and return it; fail with `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except (httpx.HTTPError, OSError, ValueError, KeyError) as err:
            last_error = err
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what} (last error: {last_error})")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Process:
    popen: subprocess.Popen
    log: Path

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=20)


def start(command: list[str], env: dict[str, str], log: Path, cwd: Path = REPO) -> Process:
    handle = log.open("wb")
    popen = subprocess.Popen(command, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT)
    handle.close()
    return Process(popen, log)


def start_pausing_writer(path: Path, data: bytes, pause_s: float, rename_to: Path | None = None) -> threading.Thread:
    """A camera's writer thread: writes half the file, pauses `pause_s`, writes the rest (then renames, if asked).
    Returns once the first half is on disk."""
    first_half = threading.Event()

    def write() -> None:
        with path.open("wb") as handle:
            handle.write(data[: len(data) // 2])
            handle.flush()
            first_half.set()
            time.sleep(pause_s)
            handle.write(data[len(data) // 2 :])
        if rename_to:
            path.rename(rename_to)

    writer = threading.Thread(target=write, name="writer")
    writer.start()
    assert first_half.wait(30), "the writer did not start"
    return writer


def compose_files() -> tuple[Path, ...]:
    """The GPU deployment where a GPU is present (the device run), else the CPU override."""
    import torch

    return (COMPOSE,) if torch.cuda.is_available() else (COMPOSE, COMPOSE_CPU)


@dataclass
class Service:
    url: str
    port: int
    command: list[str]
    env: dict[str, str]
    data_dir: Path
    process: Process


def service_launch(root: Path, port: int) -> tuple[list[str], dict[str, str], Path]:
    """The container's command and environment, mapped onto this machine: `python` is this interpreter, the
    port is free, the container's /data and /app/weights are temp folders (weights holds the manifest, as in
    the image). Everything else is exactly what the image and compose file give the container."""
    command, container_env = container_process(COMPOSE_ENV, *compose_files())
    assert command[0] == "python" and command[1:3] == ["-m", "service"], command
    command = [sys.executable, *command[1:]]
    command[command.index("--port") + 1] = str(port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DCPSFR_")}
    env.update({k: v for k, v in container_env.items() if k.startswith(("DCPSFR_", "PYTHON"))})
    for name, folder in CONTAINER_PATHS.items():
        env[name] = str(root / folder)
        (root / folder).mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "weights" / "manifest.json", root / "weights" / "manifest.json")
    return command, env, root / "data"


def start_service(root: Path, port: int | None = None) -> Service:
    port = port or free_port()
    command, env, data_dir = service_launch(root, port)
    process = start(command, env, root / f"service-{port}.log")
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if process.popen.poll() is not None:
            pytest.fail(f"the service exited with {process.popen.returncode}:\n{process.log_tail()}")
        return httpx.get(f"{url}/readyz", timeout=5).status_code == 200

    wait_for(ready, START_TIMEOUT_S, f"the service's /readyz on port {port}")
    return Service(url, port, command, env, data_dir, process)


@pytest.fixture(scope="session")
def deploy_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("deploy")


@pytest.fixture(scope="session")
def deploy_service(deploy_root: Path) -> Iterator[Service]:
    service = start_service(deploy_root / "service")
    yield service
    service.process.stop()


@dataclass
class Prometheus:
    url: str
    process: Process

    def query(self, expr: str) -> list[dict]:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10).json()
        assert answer["status"] == "success", f"{expr}: {answer}"
        return answer["data"]["result"]


def scrape_config_for(service: Service, prometheus_port: int, key_file: Path) -> dict:
    """docker/prometheus/prometheus.yml with loopback targets, the key as a temp file, 1 s scrapes and the
    alert rules by their path in the repository."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["rule_files"] = [str(PROMETHEUS_CONFIG.parent / name) for name in config.get("rule_files", [])]
    config["global"].update(scrape_interval="1s", scrape_timeout="1s")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    jobs["dcpsfr-inspect"]["static_configs"][0]["targets"] = [f"127.0.0.1:{service.port}"]
    jobs["dcpsfr-inspect"]["authorization"]["credentials_file"] = str(key_file)
    jobs["prometheus"]["static_configs"][0]["targets"] = [f"127.0.0.1:{prometheus_port}"]
    return config


def start_prometheus(service: Service, root: Path) -> Prometheus:
    """A real Prometheus server on loopback, scraping `service` with the deployed scrape config."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("the prometheus server is not installed (Debian package `prometheus`; .ci/run installs it)")
    root.mkdir(parents=True)
    key_file = root / "metrics-api-key"
    key_file.write_text(COMPOSE_ENV["DCPSFR_METRICS_API_KEY"])
    port = free_port()
    (root / "prometheus.yml").write_text(yaml.safe_dump(scrape_config_for(service, port, key_file)))
    command = [
        binary,
        f"--config.file={root / 'prometheus.yml'}",
        f"--storage.tsdb.path={root / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    process = start(command, dict(os.environ), root / "prometheus.log", cwd=root)
    server = Prometheus(f"http://127.0.0.1:{port}", process)

    def ready() -> bool:
        if process.popen.poll() is not None:
            pytest.fail(f"prometheus exited with {process.popen.returncode}:\n{process.log_tail()}")
        return httpx.get(f"{server.url}/-/ready", timeout=5).status_code == 200

    try:
        wait_for(ready, START_TIMEOUT_S, "prometheus /-/ready")
    except BaseException:
        process.stop()
        raise
    return server
