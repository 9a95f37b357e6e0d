"""A camera writing its frames the way real ones do: slowly, in parts, sometimes under a temporary name."""

from __future__ import annotations

import threading
import time
from pathlib import Path


def start_pausing_writer(path: Path, data: bytes, pause_s: float, rename_to: Path | None = None) -> threading.Thread:
    """A camera's writer thread: writes half the file, pauses `pause_s`, writes the rest (then renames, if asked).
    Returns once the first half is on disk."""
    first_half = threading.Event()

    def write() -> None:
        with path.open("wb") as handle:
            handle.write(data[: len(data) // 2])
            handle.flush()
            first_half.set()
            time.sleep(pause_s)
            handle.write(data[len(data) // 2 :])
        if rename_to:
            path.rename(rename_to)

    writer = threading.Thread(target=write, name="writer")
    writer.start()
    assert first_half.wait(30), "the writer did not start"
    return writer
