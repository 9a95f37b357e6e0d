"""Fixtures of the API tests."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["sqlite", "postgresql"])
def replicas(request, make_client, tmp_path):
    """make(**settings): an app on the shared data dir and the shared database (SQLite in it, or PostgreSQL: a fresh
    database named after the test module)."""
    shared = {"data_dir": tmp_path / "data", "records_flush_s": 60.0}  # flushed by the reads
    if request.param == "postgresql":
        name = request.module.__name__.rsplit(".", 1)[-1]
        shared["database_url"] = request.getfixturevalue("postgres_server").new_database(name)
    return lambda **settings: make_client(**shared, **settings)
