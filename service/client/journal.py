"""The durable record of finished frames (SQLite, synchronous=FULL): a frame recorded here is never sent again,
however often the client restarts. A frame counts as finished once its result (or its rejection) is on disk.

A frame's key is `name|size|mtime_ns|ctime_ns|inode|content digest` (see `watch.Frame`), so keys sharing a prefix
are states of one file: `statuses_under` finds them without reading the file. Journals of older clients hold
`name|size|mtime_ns` keys; they still count, for a file that has not changed since (`legacy_status`).
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS frames (
    key         TEXT PRIMARY KEY,   -- the frame's identity: file name, stat and content digest
    source      TEXT NOT NULL,      -- the image file, as found
    stem        TEXT NOT NULL,      -- output files: <stem>.json, <stem>.mask.png, <stem>.error.json
    status      TEXT NOT NULL CHECK (status IN ('done', 'rejected')),
    detail      TEXT,
    finished_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS frames_stem ON frames (stem);
"""
KEY_SEPARATOR = "|"
AFTER_SEPARATOR = chr(ord(KEY_SEPARATOR) + 1)  # keys starting with "prefix|" sort below "prefix}"


class Journal:
    """The SQLite record of finished frames (see the module docstring); one connection, autocommit."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None)  # autocommit: every record is its own transaction
        self.db.execute("PRAGMA synchronous = FULL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        """Close the database connection."""
        self.db.close()

    def status(self, key: str) -> str | None:
        """The status of a recorded frame ("done" or "rejected"); None for one not recorded."""
        row = self.db.execute("SELECT status FROM frames WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def is_finished(self, key: str) -> bool:
        """Whether the frame with this key is recorded (done or rejected)."""
        return self.status(key) is not None

    def statuses_under(self, prefix: str) -> dict[str, str]:
        """Key -> status of every recorded key that starts with `prefix` and the separator."""
        low, high = prefix + KEY_SEPARATOR, prefix + AFTER_SEPARATOR
        rows = self.db.execute("SELECT key, status FROM frames WHERE key > ? AND key < ?", (low, high))
        return dict(rows.fetchall())

    def legacy_status(self, key: str, changed_ns: int) -> str | None:
        """The status recorded under an older client's key (`name|size|mtime_ns`), if recorded after `changed_ns`
        (ns since the epoch: when the file last changed); None otherwise."""
        row = self.db.execute("SELECT status, finished_at FROM frames WHERE key = ?", (key,)).fetchone()
        if row is None or datetime.fromisoformat(row[1]).timestamp() * 1e9 < changed_ns:
            return None
        return row[0]

    def stem_owner(self, stem: str) -> str | None:
        """The key of a frame whose outputs use `stem`, if any."""
        row = self.db.execute("SELECT key FROM frames WHERE stem = ?", (stem,)).fetchone()
        return row[0] if row else None

    def record(self, key: str, source: str, stem: str, status: str, detail: str | None = None) -> None:
        """Record a frame as finished with `status` "done" or
        "rejected" (a second record of the key replaces the first)."""
        finished_at = datetime.now(UTC).isoformat()
        self.db.execute(
            "INSERT OR REPLACE INTO frames VALUES (?, ?, ?, ?, ?, ?)", (key, source, stem, status, detail, finished_at)
        )

    def counts(self) -> dict[str, int]:
        """Recorded frames per status, e.g. {"done": 12, "rejected": 1}."""
        return dict(self.db.execute("SELECT status, COUNT(*) FROM frames GROUP BY status").fetchall())
