"""The durable record of finished frames (SQLite, synchronous=FULL): a frame recorded here is never sent again,
however often the client restarts. A frame counts as finished once its result (or its rejection) is on disk."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS frames (
    key         TEXT PRIMARY KEY,   -- file name, size and mtime: a rewritten file is a new frame
    source      TEXT NOT NULL,      -- the image file, as found
    stem        TEXT NOT NULL,      -- output files: <stem>.json, <stem>.mask.png, <stem>.error.json
    status      TEXT NOT NULL CHECK (status IN ('done', 'rejected')),
    detail      TEXT,
    finished_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS frames_stem ON frames (stem);
"""


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

    def is_finished(self, key: str) -> bool:
        """Whether the frame with this key is recorded (done or rejected)."""
        return self.db.execute("SELECT 1 FROM frames WHERE key = ?", (key,)).fetchone() is not None

    def stem_owner(self, stem: str) -> str | None:
        """The key of the frame whose outputs use `stem`, if any."""
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
