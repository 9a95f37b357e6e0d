"""The durable local spool: records wait here, one JSON line each, until the database has them. Each replica (each
process) writes its own numbered segments and holds its lock file; a segment is sealed (fsync) before the writer
inserts it and deleted once inserted. A process that died (SIGKILL, power loss) leaves its lock file unlocked:
the next process to start on the same folder adopts its segments.

An append is one write(2) on the request path: in the kernel as soon as it returns, so a killed process loses
nothing; the fsync at sealing makes a batch survive a power loss too."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class Spool:
    """This process's segments in `folder`, and those adopted from dead processes."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._lock_fd = os.open(folder / f"{self.owner}.lock", os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._mutex = threading.Lock()
        self._number = 0
        self._fd = self._open_segment()
        self._appended = 0  # lines in the open segment

    def _segment(self, owner: str, number: int) -> Path:
        return self.folder / f"{owner}.{number:09d}.jsonl"

    def _open_segment(self) -> int:
        return os.open(self._segment(self.owner, self._number), os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)

    def append(self, record: dict[str, Any]) -> None:
        """Add one record (JSON-serialisable) to the open segment. Raises OSError (a full or failed disk)."""
        line = (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()
        with self._mutex:
            os.write(self._fd, line)
            self._appended += 1

    def seal(self) -> None:
        """Close the open segment (fsync) when it holds records, and open the next one."""
        with self._mutex:
            if self._appended == 0:
                return
            os.fsync(self._fd)
            os.close(self._fd)
            self._number += 1
            self._fd = self._open_segment()
            self._appended = 0

    def sealed(self) -> list[Path]:
        """This process's sealed segments, oldest first, then every segment of a dead process (adopted: its lock
        file is taken over and removed when it has no segments left)."""
        mine = [p for p in sorted(self.folder.glob(f"{self.owner}.*.jsonl")) if p != self._open_path()]
        return mine + self._adopted()

    def _open_path(self) -> Path:
        return self._segment(self.owner, self._number)

    def _adopted(self) -> list[Path]:
        segments = []
        for lock in sorted(self.folder.glob("*.lock")):
            owner = lock.name.removesuffix(".lock")
            if owner == self.owner:
                continue
            try:
                fd = os.open(lock, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)  # a live process's
                continue
            found = sorted(self.folder.glob(f"{owner}.*.jsonl"))
            if not found:
                lock.unlink(missing_ok=True)
            segments += found
            os.close(fd)  # another process may adopt the same segments meanwhile: inserts are idempotent
        return segments

    def pending(self) -> int:
        """Records waiting in sealed segments (this process's and adopted ones) and the open one."""
        return sum(1 for path in self.sealed() for _ in read_segment(path)) + self._appended

    def close(self) -> None:
        """Seal the open segment (empty segments are removed) and release the lock (segments left wait for the next
        process)."""
        self.seal()
        with self._mutex:
            os.close(self._fd)
            self._open_path().unlink(missing_ok=True)
            os.close(self._lock_fd)
            if not list(self.folder.glob(f"{self.owner}.*.jsonl")):
                (self.folder / f"{self.owner}.lock").unlink(missing_ok=True)


def read_segment(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a segment; a last line cut by a crash (no newline) is skipped."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    for line in data.split(b"\n"):
        if line:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue
