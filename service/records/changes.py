"""The change feed between replicas: a writer announces a changed key (a product id) inside its transaction, and
every replica's ChangeFeed hears it as soon as the transaction commits (PostgreSQL LISTEN/NOTIFY on CHANNEL;
nothing is sent on rollback). While the feed's connection is lost, notifications are lost too: the feed then calls
on_change(None) ("resync everything") every poll_s and after it connects again. SQLite is one node: announce() and
the feed do nothing, since a replica's own writes update it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import sqlalchemy
from sqlalchemy import text
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

CHANNEL = "dcpsfr_changes"
APPLICATION_NAME = "dcpsfr-change-feed"  # names the listener in pg_stat_activity
WAIT_S = 0.25  # longest wait for a notification before checking stop(): stop() returns within about this
BACKOFF_S = (0.25, 10.0)  # reconnect delay after a failed attempt: first, doubled up to the last
CONNECT_TIMEOUT_S = 5
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}


def announce(connection: sqlalchemy.Connection, key: str) -> None:
    """Announce that `key` changed, inside the caller's transaction: PostgreSQL delivers it to every listening feed
    on commit (one delivery per distinct key per transaction) and drops it on rollback. A no-op on other databases.
    Keys are product ids (PostgreSQL's payload limit is 8000 bytes; a longer key raises SQLAlchemy's DBAPIError)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_notify(:channel, :key)"), {"channel": CHANNEL, "key": key})


def libpq_url(url: str) -> str:
    """A SQLAlchemy URL (`postgresql://`, `postgresql+psycopg://`) as a libpq connection URI for psycopg."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class ChangeFeed:
    """Calls `on_change(key)` for each key announced by any replica, from a daemon thread with its own connection;
    `on_change(None)` means "changes may have been missed: resync all" (after each connect, and every `poll_s`
    seconds while disconnected). Keys announced together are coalesced: each distinct key once per batch. An
    exception from on_change is logged and the feed goes on. On a SQLite URL start() does nothing."""

    def __init__(self, url: str, on_change: Callable[[str | None], None], poll_s: float = 2.0) -> None:
        self.url = url
        self.on_change = on_change
        self.poll_s = poll_s
        self.listens = make_url(url).get_backend_name() == "postgresql"
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._connection = None
        self._connected = False
        self._fell_back = False

    @property
    def connected(self) -> bool:
        """Whether changes from other replicas arrive at once: listening now on PostgreSQL; always on SQLite."""
        return self._connected or not self.listens

    def start(self) -> None:
        """Start listening (a daemon thread named `change-feed`); nothing on SQLite."""
        if not self.listens or self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="change-feed", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread and close its connection; waits up to `timeout_s` seconds for the thread."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        delay_s = 0.0
        next_poll = time.monotonic()
        while not self._stopping.is_set():
            connection = self._connect()
            if connection is not None:
                delay_s = 0.0
                self._listen(connection)
                next_poll = time.monotonic()  # a poll at once: changes since the connection broke
                continue
            if time.monotonic() >= next_poll:
                self._notify(None)
                next_poll = time.monotonic() + self.poll_s
            delay_s = min(BACKOFF_S[1], max(BACKOFF_S[0], delay_s * 2))
            self._stopping.wait(max(0.0, min(delay_s, next_poll - time.monotonic())))

    def _connect(self):
        """A listening autocommit connection, or None (logged once per outage) when the database is unreachable."""
        import psycopg

        try:
            connection = psycopg.connect(
                libpq_url(self.url),
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_S,
                application_name=APPLICATION_NAME,
                **KEEPALIVES,
            )
            connection.execute(f"LISTEN {CHANNEL}")
        except psycopg.Error as err:
            self._fall_back(err)
            return None
        if self._fell_back:
            log.info("change feed: listening again; changes from other replicas arrive at once")
            self._fell_back = False
        return connection

    def _fall_back(self, err: Exception) -> None:
        self._connected = False
        if not self._fell_back:
            log.warning(
                "change feed: the database connection is lost (%s); resyncing every %g s until it is back",
                str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__,
                self.poll_s,
            )
            self._fell_back = True

    def _listen(self, connection) -> None:
        """Deliver notifications until stop() or until the connection breaks; closes the connection."""
        self._connected = True
        try:
            self._notify(None)  # whatever changed before this connection listened
            while not self._stopping.is_set():
                keys = list(n.payload for n in connection.notifies(timeout=WAIT_S, stop_after=1))
                keys += [n.payload for n in connection.notifies(timeout=0)]  # those that arrived together
                for key in dict.fromkeys(keys):
                    self._notify(key)
        except Exception as err:  # psycopg's OperationalError mostly; nothing may end the thread
            self._fall_back(err)
        finally:
            self._connected = False
            connection.close()

    def _notify(self, key: str | None) -> None:
        try:
            self.on_change(key)
        except Exception:
            log.exception("change feed: on_change(%r) failed", key)
