"""Shared fixtures. Everything here uses the `tiny` config: random weights, tests only, never a download.

Under `pytest -n 2 --dist loadgroup` (make test) each test file runs on one worker, so its module fixtures (servers,
replicas) start once; files in one SHARED_WORKER group also share that worker's session fixtures (the deployed
service)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.helpers.processes import REPO

SHARED_DATA = REPO.parent / "shared" / "data"
BOTTLE = SHARED_DATA / "mvtec_ad" / "bottle_xs"
HARD_CASES = SHARED_DATA / "hard-cases"


SHARED_WORKER = {  # test file -> a group of files that share their worker's session fixtures
    "tests/e2e/test_client.py": "deployment",
    "tests/e2e/test_prometheus.py": "deployment",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give every test the xdist group of its file (or of its SHARED_WORKER group)."""
    for item in items:
        path = Path(item.path).relative_to(REPO).as_posix()
        item.add_marker(pytest.mark.xdist_group(SHARED_WORKER.get(path, path)))


@pytest.fixture(autouse=True)
def seeded_torch() -> None:
    """Every test starts from the same torch RNG state: an unseeded `torch.randn` in a test gives the same
    values on every run, so an outcome never depends on the draw (margins are still checked per test)."""
    torch = sys.modules.get("torch")  # imported by the test module if it uses torch; no import cost otherwise
    if torch is not None:
        torch.manual_seed(0)


@pytest.fixture(scope="session")
def bottle_dir() -> Path:
    """The 15 real MVTec AD bottle images in ../shared/data (skips when absent)."""
    if not BOTTLE.is_dir():
        pytest.skip(f"real sample data not found at {BOTTLE}")
    return BOTTLE


@pytest.fixture(scope="session")
def hard_cases() -> Path:
    """Camera-style hard cases in ../shared/data/hard-cases (skips when absent); its README says what each needs."""
    if not HARD_CASES.is_dir():
        pytest.skip(f"hard cases not found at {HARD_CASES}")
    return HARD_CASES


@pytest.fixture(scope="session")
def tiny_detector():
    """The tiny detector (random weights, training-free mode), built once per session."""
    from model import create_detector

    return create_detector("tiny", weights_dir=None, device="cpu")
