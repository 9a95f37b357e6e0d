"""Start-up: a records database newer than the code is refused in one line; one that does not answer yet delays
nothing (records wait in the spool)."""

from __future__ import annotations

import logging

import pytest
from alembic import command
from sqlalchemy import insert, text

from service.__main__ import check_records_schema
from service.records.archive import FrameArchive, RetentionPolicy
from service.records.database import alembic_config, database_url, migrate, open_database
from service.records.recorder import Recorder, RecorderSettings
from service.records.store import RecordStore
from service.records.tables import inspections
from service.settings import Settings
from tests.helpers.processes import free_port
from tests.service.records.rows import row
from tests.service.records.test_recorder import spooled


def test_a_newer_schema_stops_the_start_with_one_line(tmp_path):
    settings = Settings(data_dir=tmp_path, model_config_name="tiny")
    check_records_schema(settings)  # a new SQLite database: migrated
    engine = open_database(database_url("", tmp_path))
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0002_from_the_future'"))
    engine.dispose()
    with pytest.raises(SystemExit) as stopped:
        check_records_schema(settings)
    message = str(stopped.value.code)
    assert message.startswith("error: the records database is at schema revision '0002_from_the_future'")
    assert "\n" not in message


def test_a_database_down_at_start_delays_nothing_and_is_retried(tmp_path):
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/records"  # nothing listens there
    settings = RecorderSettings(3600, RetentionPolicy(True, 1, 30), 10**9, 3600)
    rec = Recorder(open_database(url), tmp_path / "spool", FrameArchive(tmp_path / "frames"), settings)
    rec.start()  # no exception: the writer retries
    try:
        assert rec.error is not None and not rec.migrated
        rec.record(spooled(1), frame=b"kept meanwhile")
        assert rec.flush() is False and rec.spool.pending() == 1
    finally:
        rec.stop(timeout_s=1)
    assert list((tmp_path / "spool").glob("*.jsonl")), "the record waits on disk for the next start"


def test_migrations_run_on_an_empty_database_and_again_change_nothing(database):
    migrate(database)
    with database.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0004"


def test_the_review_migration_keeps_the_records_made_before_it_out_of_the_queue_and_goes_back(database):
    config = alembic_config()
    with database.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0002")  # a database of the service before the review queue
    before = {k: v for k, v in row(1).items() if k != "review"}
    with database.begin() as connection:
        connection.execute(insert(inspections).values(**before))
    migrate(database)
    store = RecordStore(database)
    assert store.get(row(1)["inspection_id"])["review"] is None
    assert store.review_queue(None, 10) == ([], None, 0) and store.review_policies() == {}


def test_a_migration_is_one_log_line_and_an_up_to_date_schema_none(tmp_path, caplog):
    engine = open_database(f"sqlite:///{tmp_path / 'records.sqlite3'}")
    caplog.set_level(logging.INFO)
    migrate(engine)
    assert [r.getMessage() for r in caplog.records] == ["records database: schema migrated from empty to 0004"]
    caplog.clear()
    migrate(engine)  # every later start
    assert caplog.records == []
