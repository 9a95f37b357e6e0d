"""The records database: SQLite in the data dir by default (WAL, zero configuration), PostgreSQL when
DCPSFR_DATABASE_URL names one (required when replicas share the records). The schema is Alembic's
(service/records/migrations, packaged with the service) and migrated at start-up; a database whose schema is newer
than this code is refused (SchemaTooNew)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event

log = logging.getLogger(__name__)
# Alembic says "Context impl ...", "Will assume ... DDL" and each step at INFO on every look at the schema; the one line
# that matters, a migration done, is logged here instead
logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
MIGRATIONS = Path(__file__).with_name("migrations")
SQLITE_FILE = "records.sqlite3"
_MIGRATING = threading.Lock()  # the recorder and the product store of one process both migrate


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer version of the service than this one."""


def database_url(configured: str, data_dir: Path) -> str:
    """The configured URL, else SQLite in `data_dir`/records/records.sqlite3 (that folder is made by the spool)."""
    return configured or f"sqlite:///{data_dir / 'records' / SQLITE_FILE}"


def open_database(url: str) -> Engine:
    """An engine for `url` (nothing connects yet). SQLite runs in WAL mode with a 30 s busy timeout, so that the
    web threads read while the record writer writes; a PostgreSQL URL `postgresql://` uses psycopg 3."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=4)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _pragmas(connection, _record) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def alembic_config() -> Config:
    """Alembic's configuration for the packaged migrations (no alembic.ini)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def schema_revision(engine: Engine) -> str | None:
    """The database's schema revision, None before the first migration."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def migrate(engine: Engine) -> None:
    """Bring the schema to this code's head revision. Raises SchemaTooNew when the database carries a revision this
    code does not know (a newer service migrated it), and SQLAlchemy's OperationalError when it cannot connect."""
    with _MIGRATING:
        _migrate(engine)


def _migrate(engine: Engine) -> None:
    config = alembic_config()
    script = ScriptDirectory.from_config(config)
    current = schema_revision(engine)
    if current is not None and current not in {rev.revision for rev in script.walk_revisions()}:
        raise SchemaTooNew(
            f"the records database is at schema revision {current!r}, newer than this service knows "
            f"(head {script.get_current_head()!r}): run the newer service, or restore a backup made by this one"
        )
    head = script.get_current_head()
    if current == head:
        return  # nothing to run: no connection handed to Alembic, none of its lines in the log
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    log.info("records database: schema migrated from %s to %s", current or "empty", head)
