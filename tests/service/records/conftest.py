"""The records tests run against both databases: SQLite in a temporary folder and the session's real PostgreSQL
server (its tables emptied before each test)."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from service.records.database import migrate, open_database


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path) -> Engine:
    """A records database of each kind, new and migrated."""
    if request.param == "sqlite":
        engine = open_database(f"sqlite:///{tmp_path / 'records.sqlite3'}")
    else:
        engine = open_database(request.getfixturevalue("postgres_server").new_database("records_test"))
    migrate(engine)
    yield engine
    engine.dispose()
