"""Where results go besides the PLC: a JSON-lines file, one line per part."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from station.handshake import PartResult


class ResultsFile:
    """Appends each result as one JSON line (PartResult.record) and flushes it."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.lock = threading.Lock()

    def __call__(self, result: PartResult) -> None:
        """Append the result; raises OSError when the file cannot be written."""
        line = json.dumps(result.record(), ensure_ascii=False) + "\n"
        with self.lock, self.path.open("a", encoding="utf-8") as handle:
            handle.write(line)
