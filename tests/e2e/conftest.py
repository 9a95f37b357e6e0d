"""End-to-end fixtures: one deployed service (the container's command and environment) shared by the session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.deployment import DeployedService, start_deployed_service


@pytest.fixture(scope="session")
def deploy_root(tmp_path_factory) -> Path:
    """The folder of the deployment's data, weights and logs."""
    return tmp_path_factory.mktemp("deploy")


@pytest.fixture(scope="session")
def deploy_service(deploy_root: Path) -> Iterator[DeployedService]:
    """The service as the container runs it (tiny config, API keys), ready."""
    service = start_deployed_service(deploy_root / "service")
    yield service
    service.process.stop()
