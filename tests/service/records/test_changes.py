"""The change feed against a real PostgreSQL server: a committed announce reaches a listening feed, a rolled-back one
never does; a lost connection (server stopped, backend terminated) turns into polls (on_change(None)) and, once
back, a resync and live notifications again; stop() ends the thread even while disconnected; SQLite is a no-op."""

from __future__ import annotations

import threading

import pytest
from psycopg import Notify
from sqlalchemy import text

from service.records.changes import APPLICATION_NAME, CHANNEL, ChangeFeed, announce, libpq_url
from service.records.database import open_database
from tests.helpers.processes import free_port
from tests.helpers.waiting import wait_for


class Calls:
    """on_change's calls, each with whether the feed was connected at that moment."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[tuple[str | None, bool]] = []
        self.feed: ChangeFeed | None = None

    def __call__(self, key: str | None) -> None:
        with self.lock:
            self.items.append((key, self.feed.connected))

    def received(self, since: int = 0) -> list[str | None]:
        with self.lock:
            return [key for key, _ in self.items[since:]]

    def __len__(self) -> int:
        with self.lock:
            return len(self.items)


@pytest.fixture
def engine(postgres_server):
    engine = open_database(postgres_server.url)
    yield engine
    engine.dispose()


def started_feed(url: str, poll_s: float = 2.0, on_change=None) -> tuple[ChangeFeed, Calls]:
    calls = Calls()
    feed = ChangeFeed(url, on_change or calls, poll_s=poll_s)
    calls.feed = feed
    feed.start()
    return feed, calls


def test_a_committed_announce_reaches_the_feed_once_per_key(postgres_server, engine):
    feed, calls = started_feed(postgres_server.url)
    try:
        wait_for(lambda: calls.received(), "the first resync")
        assert calls.items[0] == (None, True)  # after connecting: resync all
        with engine.begin() as connection:
            announce(connection, "screws")
            announce(connection, "screws")
            announce(connection, "washers-M8")
        wait_for(lambda: "washers-M8" in calls.received(), "the announced keys")
        assert calls.received()[1:] == ["screws", "washers-M8"]
    finally:
        feed.stop()


def test_a_rolled_back_announce_is_never_delivered(postgres_server, engine):
    feed, calls = started_feed(postgres_server.url)
    try:
        wait_for(lambda: feed.connected and calls.received(), "the feed to listen")
        with engine.connect() as connection:
            announce(connection, "discarded")
            connection.rollback()
        with engine.begin() as connection:
            announce(connection, "kept")
        wait_for(lambda: "kept" in calls.received(), "the committed key")  # delivered in commit order
        assert "discarded" not in calls.received()
    finally:
        feed.stop()


def test_a_raising_on_change_does_not_end_the_feed(postgres_server, engine):
    seen = []

    def on_change(key):
        seen.append(key)
        raise RuntimeError("a broken listener")

    feed = ChangeFeed(postgres_server.url, on_change)
    feed.start()
    try:
        wait_for(lambda: feed.connected and seen, "the feed to listen")
        for key in ("first", "second"):
            with engine.begin() as connection:
                announce(connection, key)
        wait_for(lambda: "second" in seen, "a key after on_change raised")
        assert seen == [None, "first", "second"]
    finally:
        feed.stop()


def test_a_stopped_server_gives_polls_then_a_resync_and_live_notifications(postgres_server, engine):
    feed, calls = started_feed(postgres_server.url, poll_s=0.1)
    try:
        wait_for(lambda: feed.connected and calls.received(), "the feed to listen")
        postgres_server.stop()
        try:
            wait_for(lambda: not feed.connected, "the feed to notice the outage")
            down = len(calls)
            wait_for(lambda: calls.received(down)[:3] == [None, None, None], "polls while the server is down")
            assert all(not connected for _, connected in calls.items[down:])
        finally:
            postgres_server.start()
        wait_for(lambda: feed.connected, "the feed to reconnect")
        wait_for(lambda: (None, True) in calls.items[down:], "the resync after reconnecting")
        engine.dispose()  # its pooled connections died with the server
        with engine.begin() as connection:
            announce(connection, "after-restart")
        wait_for(lambda: "after-restart" in calls.received(), "a notification after the restart")
    finally:
        feed.stop()


def test_a_terminated_listener_reconnects_and_resyncs(postgres_server, engine):
    feed, calls = started_feed(postgres_server.url, poll_s=0.1)
    try:
        wait_for(lambda: feed.connected and calls.received(), "the feed to listen")
        before = len(calls)
        with engine.begin() as connection:
            ended = connection.execute(
                text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = :name"),
                {"name": APPLICATION_NAME},
            ).scalar_one()
        assert ended == 1
        wait_for(lambda: (None, True) in calls.items[before:], "the resync after reconnecting")
        with engine.begin() as connection:
            announce(connection, "after-terminate")
        wait_for(lambda: "after-terminate" in calls.received(), "a notification on the new connection")
    finally:
        feed.stop()


class Batches:
    """A stand-in for the feed's psycopg connection: each notifies() call gives the next batch of payloads, then
    the connection breaks."""

    def __init__(self, *batches: list[str]) -> None:
        self.batches = list(batches)
        self.closed = False

    def notifies(self, timeout: float, stop_after: int | None = None):
        import psycopg

        if not self.batches:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return iter([Notify(CHANNEL, payload, 1) for payload in self.batches.pop(0)])

    def close(self) -> None:
        self.closed = True


def test_keys_that_arrive_together_are_handled_once_each_in_order():
    calls = []
    feed = ChangeFeed("postgresql://postgres@127.0.0.1:1/records", calls.append)
    connection = Batches(["a", "b", "a"], ["b", "c"], ["a"], [])
    feed._listen(connection)  # returns when the connection breaks
    assert calls == [None, "a", "b", "c", "a"]  # a resync, then [a, b, a] + [b, c] as one batch, [a] + [] another
    assert connection.closed and not feed.connected


@pytest.mark.parametrize("connected_first", [True, False])
def test_stop_ends_the_thread_connected_or_not(postgres_server, connected_first):
    url = postgres_server.url if connected_first else f"postgresql://postgres@127.0.0.1:{free_port()}/records"
    feed, calls = started_feed(url, poll_s=3600)
    thread = feed._thread
    wait_for(lambda: calls.received(), "the first resync or poll")
    assert feed.connected is connected_first
    feed.stop(timeout_s=5)
    assert not thread.is_alive()


def test_on_sqlite_the_feed_and_announce_do_nothing(tmp_path):
    engine = open_database(f"sqlite:///{tmp_path / 'records.sqlite3'}")
    calls = []
    feed = ChangeFeed(str(engine.url), calls.append, poll_s=0.01)
    feed.start()
    with engine.begin() as connection:
        announce(connection, "screws")
    assert feed._thread is None and calls == [] and feed.connected
    feed.stop()
    engine.dispose()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://postgres@127.0.0.1:5432/records", "postgresql://postgres@127.0.0.1:5432/records"),
        (
            "postgresql+psycopg://u:p%40ss@db/records?sslmode=require",
            "postgresql://u:p%40ss@db/records?sslmode=require",
        ),
    ],
)
def test_libpq_url_drops_the_driver_and_keeps_password_and_options(url, expected):
    assert libpq_url(url) == expected
