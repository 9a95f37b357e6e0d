"""The records tests run against both databases: SQLite in a temporary folder and the session's real PostgreSQL
server (its tables emptied before each test)."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text

from service.records.database import migrate, open_database


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path) -> Engine:
    """A records database of each kind, empty and migrated."""
    if request.param == "sqlite":
        engine = open_database(f"sqlite:///{tmp_path / 'records.sqlite3'}")
    else:
        engine = open_database(request.getfixturevalue("postgres_server").url)
        with engine.begin() as connection:  # from scratch: the migrations run on an empty schema
            connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    migrate(engine)
    yield engine
    engine.dispose()
