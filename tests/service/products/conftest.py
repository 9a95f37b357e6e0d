"""Registry fixtures: product stores standing for replicas, on SQLite or on the session's PostgreSQL server."""

from __future__ import annotations

import uuid

import pytest

from tests.helpers.registry import open_registry


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_url(request) -> str:
    """ "" (SQLite in the data dir) or a fresh PostgreSQL database (skipped when PostgreSQL is not installed)."""
    if request.param == "sqlite":
        return ""
    return request.getfixturevalue("postgres_server").new_database(f"registry_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def replicas(tmp_path, tiny_detector, registry_url):
    """Two opened stores on one data dir and one database, like two service processes."""
    stores = [open_registry(tmp_path, registry_url, tiny_detector.load_references) for _ in range(2)]
    yield stores
    for store in stores:
        store.engine.dispose()
