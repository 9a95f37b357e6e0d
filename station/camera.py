"""Where frames come from: the Camera protocol every source implements, and the folder camera.

A camera is asked for one frame per trigger (`acquire`); it raises CameraTimeout when none comes in time and
CameraFailed when it cannot be used. A GenICam source implements the same three members.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

TEMPORARY_SUFFIXES = (".part", ".partial", ".tmp", ".temp", ".crdownload", ".filepart", ".swp")


def is_temporary(name: str) -> bool:
    """A file a writer has not finished: hidden (`.name`), `~name`, or `name.part`, `name.tmp`, ... until renamed."""
    return name.startswith((".", "~")) or name.lower().endswith(TEMPORARY_SUFFIXES)


class CameraError(Exception):
    """The camera gave no frame."""


class CameraTimeout(CameraError):
    """No frame within the acquire timeout."""


class CameraFailed(CameraError):
    """The camera cannot be opened or read."""


@dataclass(frozen=True)
class Frame:
    """One acquired image: its encoded bytes (PNG, JPEG, ...), a file name for the upload, and when it was taken;
    a GenICam camera adds its own frame id and timestamp."""

    data: bytes
    filename: str
    taken: float = field(default_factory=time.monotonic)  # monotonic seconds
    frame_id: int | None = None  # the camera's block id
    camera_timestamp_ns: int | None = None  # the camera's clock, nanoseconds


class Camera(Protocol):
    """A frame source; `acquire` is called from one thread at a time."""

    name: str

    def acquire(self, timeout_s: float) -> Frame:
        """The next frame; raises CameraTimeout after `timeout_s` seconds without one, CameraFailed when broken."""
        ...

    def close(self) -> None:
        """Release the device."""
        ...


class FolderCamera:
    """A camera that writes one file per trigger into a folder (FTP or SMB upload, a vendor's SDK): each trigger
    takes the oldest file not taken yet whose size stayed the same for `settle_s`. Files already there at start,
    temporary names (`.x`, `~x`, `x.part`, `x.tmp`, ...) and names not matching `pattern` are never taken; a
    taken file is deleted with `delete_taken`, else remembered. A file last written more than `stale_s` before a
    trigger belongs to an earlier part (one that ended in an error before its frame was taken, or a frame that came
    after its timeout): it is left in place, logged and never taken, so that no part is judged on another's frame."""

    def __init__(
        self,
        folder: Path,
        name: str = "folder",
        pattern: str = "*",
        settle_s: float = 0.02,
        poll_s: float = 0.005,
        delete_taken: bool = False,
        clock: Callable[[], float] = time.monotonic,
        stale_s: float = 0.5,
    ) -> None:
        if not folder.is_dir():
            raise CameraFailed(f"camera folder {folder} is not an existing folder")
        self.folder, self.name, self.pattern = folder, name, pattern
        self.settle_s, self.poll_s, self.delete_taken, self.clock = settle_s, poll_s, delete_taken, clock
        self.stale_s = stale_s
        self.taken: set[str] = set(self.candidates())  # present at start: not frames of this run's parts

    def candidates(self) -> list[str]:
        """Names of the files that could be frames, oldest modification first."""
        return [name for _, name in self.written()]

    def written(self) -> list[tuple[int, str]]:
        """(modification time in ns since the epoch, name) of the files that could be frames, oldest first."""
        try:
            with os.scandir(self.folder) as entries:
                found = [
                    (entry.stat().st_mtime_ns, entry.name)
                    for entry in entries
                    if not is_temporary(entry.name) and fnmatch(entry.name, self.pattern) and entry.is_file()
                ]
        except OSError as err:
            raise CameraFailed(f"cannot read camera folder {self.folder}: {err}") from err
        return sorted(found)

    def set_aside_stale(self) -> None:
        """Mark files written more than `stale_s` ago as taken (an earlier part's), with one log line each."""
        cutoff_ns = time.time_ns() - int(self.stale_s * 1e9)
        for written_ns, name in self.written():
            if name not in self.taken and written_ns < cutoff_ns:
                self.taken.add(name)
                age = (time.time_ns() - written_ns) / 1e9
                log.warning(
                    "%s: %s was written %.1f s before this trigger: an earlier part's frame, left in place and not "
                    "taken (if the camera writes frames that long before the station's trigger, raise stale_s)",
                    self.name,
                    name,
                    age,
                )

    def acquire(self, timeout_s: float) -> Frame:
        """The oldest new file once settled; raises CameraTimeout when none settles within `timeout_s`."""
        self.set_aside_stale()
        deadline = self.clock() + timeout_s
        sizes: dict[str, tuple[int, float]] = {}  # name -> (size, when first seen at that size)
        while True:
            now = self.clock()
            for name in self.candidates():
                if name in self.taken:
                    continue
                frame = self.settled(name, sizes, now)
                if frame is not None:
                    return frame
            if now >= deadline:
                raise CameraTimeout(f"no new file in {self.folder} within {timeout_s:g} s")
            time.sleep(self.poll_s)

    def settled(self, name: str, sizes: dict[str, tuple[int, float]], now: float) -> Frame | None:
        """The file as a frame when its size has not changed for `settle_s`, else None (still being written)."""
        path = self.folder / name
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        seen = sizes.get(name)
        if seen is None or seen[0] != size:
            sizes[name] = (size, now)
            return None if self.settle_s > 0 else self.take(path)
        return self.take(path) if now - seen[1] >= self.settle_s and size > 0 else None

    def take(self, path: Path) -> Frame:
        """Read the file and mark it taken (deleted with `delete_taken`)."""
        try:
            data = path.read_bytes()
        except OSError as err:
            raise CameraFailed(f"cannot read {path}: {err}") from err
        self.taken.add(path.name)
        if self.delete_taken:
            path.unlink(missing_ok=True)
            self.taken.discard(path.name)
        return Frame(data, path.name)

    def close(self) -> None:
        """Nothing to release."""
