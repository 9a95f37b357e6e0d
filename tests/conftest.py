"""Shared fixtures. Everything here uses the `tiny` config: random weights, tests only, never a download."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.helpers.processes import REPO

SHARED_DATA = REPO.parent / "shared" / "data"
BOTTLE = SHARED_DATA / "mvtec_ad" / "bottle_xs"
HARD_CASES = SHARED_DATA / "hard-cases"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest runs first (the soak, then the other end-to-end files), so that `pytest -n 2 --dist loadfile`
    (make test) hands them out while the short files fill the gaps; otherwise collection order."""

    def weight(item: pytest.Item) -> int:
        if item.get_closest_marker("soak"):
            return 0
        return 1 if item.get_closest_marker("e2e") else 2

    items.sort(key=weight)  # stable: files and tests keep their order within each weight


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


@pytest.fixture(scope="session")
def postgres_server():
    """One real PostgreSQL server for the whole session (tests.helpers.postgres); skips when it is not installed."""
    import shutil

    from tests.helpers.postgres import start_postgres

    try:
        server = start_postgres()
    except FileNotFoundError as err:
        pytest.skip(f"{err}; the records tests run on SQLite only")
    yield server
    try:
        server.stop()
    finally:
        shutil.rmtree(server.folder, ignore_errors=True)
