"""Telling replicas that a product changed: `announce` inside the writing transaction, `ChangeFeed` in every replica.

This is the polling fallback: `announce` sends a PostgreSQL notification on channel CHANNEL (delivered at commit,
dropped on rollback; a no-op on SQLite, which serves one node) and `ChangeFeed` calls `on_change(None)` (resync
everything) every `poll_s` seconds. A feed that LISTENs for the notifications keeps this interface.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy import Connection, text

log = logging.getLogger(__name__)

CHANNEL = "dcpsfr_products"


def announce(connection: Connection, key: str) -> None:
    """Notify the other replicas, when this transaction commits, that `key` (a product id) changed."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_notify(:channel, :key)"), {"channel": CHANNEL, "key": key})


class ChangeFeed:
    """A thread calling `on_change(None)` every `poll_s` seconds (a failing call is logged, and tried again)."""

    def __init__(self, url: str, on_change: Callable[[str | None], None], poll_s: float) -> None:
        self.url = url
        self.on_change = on_change
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="change-feed", daemon=True)

    def start(self) -> None:
        """Start the thread (its first call is at once)."""
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the thread to stop and wait up to `timeout_s` for it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            try:
                self.on_change(None)
            except Exception:
                log.exception("resync after a change failed; tried again in %.1f s", self.poll_s)
            if self._stop.wait(self.poll_s):
                return
