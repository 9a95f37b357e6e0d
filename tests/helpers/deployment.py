"""The deployment as real processes: the service started with exactly the container's command and environment
(read from the Dockerfile and compose files; `tiny` config, temp dirs for /data and /app/weights, a free port), and
a real Prometheus server on loopback scraping it with the deployed config."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from service.keys import key_hash
from tests.helpers.deployfiles import COMPOSE, COMPOSE_CPU, PROMETHEUS_CONFIG, REPO, container_process
from tests.helpers.processes import START_TIMEOUT_S, Process, ServiceProcess, free_port, start_process, start_service
from tests.helpers.waiting import wait_for

CAMERA_KEY = "camera-key"
PROMETHEUS_KEY = "prometheus-key"
COMPOSE_ENV = {  # what an operator puts in .env for this test deployment
    "DCPSFR_MODEL_CONFIG": "tiny",
    "DCPSFR_METRICS_API_KEY": PROMETHEUS_KEY,
    "POSTGRES_PASSWORD": "unused-here",
}
KEYS = [("camera", "admin", CAMERA_KEY), ("prometheus", "operator", PROMETHEUS_KEY)]  # the keys file: name, role
CONTAINER_PATHS = {"DCPSFR_DATA_DIR": "data", "DCPSFR_WEIGHTS_DIR": "weights"}  # container path -> a temp folder


def compose_files() -> tuple[Path, ...]:
    """The GPU deployment where a GPU is present (the device run), else the CPU override."""
    import torch

    return (COMPOSE,) if torch.cuda.is_available() else (COMPOSE, COMPOSE_CPU)


@dataclass
class DeployedService:
    """The service as the container runs it, and what it was started with."""

    command: list[str]
    env: dict[str, str]
    data_dir: Path
    process: ServiceProcess

    @property
    def url(self) -> str:
        """http://127.0.0.1:<port>"""
        return self.process.url

    @property
    def port(self) -> int:
        """The loopback port it listens on."""
        return self.process.port


def service_launch(root: Path, port: int) -> tuple[list[str], dict[str, str], Path]:
    """The container's command and environment, mapped onto this machine: `python` is this interpreter, the
    port is free, the container's /data and /app/weights are temp folders (weights holds the manifest, as in
    the image), the keys file the compose file mounts is one written here (KEYS), and the records database is SQLite
    in the data dir (compose's PostgreSQL service does not run here). Everything else is exactly what the image and
    compose file give the container."""
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
    keys = [{"name": name, "role": role, "sha256": key_hash(key)} for name, role, key in KEYS]
    (root / "keys.yaml").write_text(yaml.safe_dump(keys))
    env["DCPSFR_KEYS_FILE"] = str(root / "keys.yaml")
    env["DCPSFR_DATABASE_URL"] = ""
    return command, env, root / "data"


def start_deployed_service(root: Path, port: int | None = None) -> DeployedService:
    """The service started as the container starts it (on `port`, default a free one), once /readyz answers 200."""
    port = port or free_port()
    command, env, data_dir = service_launch(root, port)
    process = start_service(root, env, command, port)
    process.wait_ready()
    return DeployedService(command, env, data_dir, process)


@dataclass
class Prometheus:
    """A Prometheus server on loopback."""

    url: str
    process: Process

    def query(self, expr: str) -> list[dict]:
        """The result vector of an instant query."""
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10).json()
        assert answer["status"] == "success", f"{expr}: {answer}"
        return answer["data"]["result"]


def scrape_config_for(service: DeployedService, prometheus_port: int, key_file: Path) -> dict:
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


def start_prometheus(service: DeployedService, root: Path) -> Prometheus:
    """A real Prometheus server on loopback, scraping `service` with the deployed scrape config (skips the test
    where Debian's `prometheus` is not installed)."""
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
    process = start_process(command, dict(os.environ), root / "prometheus.log", cwd=root)
    server = Prometheus(f"http://127.0.0.1:{port}", process)

    def ready() -> bool:
        if not process.alive():
            pytest.fail(f"prometheus exited with {process.popen.returncode}:\n{process.log_tail()}")
        return httpx.get(f"{server.url}/-/ready", timeout=5).status_code == 200

    try:
        wait_for(ready, "prometheus /-/ready", START_TIMEOUT_S)
    except BaseException:
        process.stop()
        raise
    return server
