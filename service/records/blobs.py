"""Content-addressed blobs: immutable files named by the sha256 of their bytes, in a folder that replicas share.

    <folder>/<first 2 hex digits>/<sha256>

`put` writes a blob durably before anything names it (model.files.write_atomic: a temporary name beside the target,
fsync, rename, fsync of the folder); writing content that is there already rewrites nothing but touches the file, so
a garbage collector running at the same moment sees it young (see `collect`). A blob is never changed in place, so
readers need no lock; `read` checks the hash of what it read.

The seam for an object store (S3 and alike, not implemented): a class with the same five methods (`put`, `read`,
`has`, `delete`, `listing`), where `put` is a PUT of the object named by its hash (an existing name needs no write,
but its age must be refreshed, e.g. by a copy onto itself) and `listing` lists names and last-modified times.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from model import is_temporary, write_atomic

log = logging.getLogger(__name__)

SHA256_HEX = 64


class BlobCorrupt(OSError):
    """A blob's bytes do not hash to its name (a damaged disk or a hand-edited file)."""


def sha256_hex(data: bytes) -> str:
    """The content address of `data`: its sha256 as 64 hex digits."""
    return hashlib.sha256(data).hexdigest()


class BlobStore:
    """Immutable blobs under `folder` (see the module docstring). Every method may raise OSError (the volume)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, sha256: str) -> Path:
        """Where the blob with this hash lives (it may not). ValueError for a name that is no sha256."""
        if len(sha256) != SHA256_HEX or not all(c in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256 blob name: {sha256!r}")
        return self.folder / sha256[:2] / sha256

    def put(self, data: bytes) -> str:
        """Store `data` durably (nothing rewritten when the same content is there: its time is refreshed); returns
        its sha256. Raises OSError."""
        sha256 = sha256_hex(data)
        target = self.path(sha256)
        try:
            os.utime(target)  # there already: young again, so a collector running now keeps it
            return sha256
        except FileNotFoundError:
            pass
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, data)
        return sha256

    def read(self, sha256: str) -> bytes:
        """The blob's bytes, checked against its name. FileNotFoundError when absent, BlobCorrupt when the bytes do
        not match, OSError when the volume fails."""
        data = self.path(sha256).read_bytes()
        if sha256_hex(data) != sha256:
            raise BlobCorrupt(f"blob {self.path(sha256)} does not match its sha256: damaged, not used")
        return data

    def get(self, sha256: str) -> bytes | None:
        """The blob's bytes, None when it is not (or no longer) stored (not checked: see `read`)."""
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError:
            return None

    def has(self, sha256: str) -> bool:
        """Whether the blob is stored."""
        return self.path(sha256).exists()

    def delete(self, sha256: str) -> None:
        """Remove the blob (nothing when it is gone already)."""
        self.path(sha256).unlink(missing_ok=True)

    def listing(self) -> Iterator[tuple[str, float]]:
        """(sha256, modification time in s since the epoch) of every stored blob, temporary files left out."""
        if not self.folder.is_dir():
            return
        for path in self.folder.glob("*/*"):
            if is_temporary(path.name) or len(path.name) != SHA256_HEX:
                continue
            try:
                yield path.name, path.stat().st_mtime
            except FileNotFoundError:
                continue

    def collect(self, unreferenced: Callable[[list[str]], Iterable[str]], grace_s: float, batch: int = 500) -> int:
        """Delete the blobs older than `grace_s` that `unreferenced(names)` says no row names; returns how many.
        Younger ones may belong to a write whose row is not committed yet (another replica's): they stay."""
        oldest = time.time() - grace_s
        old = [name for name, mtime in self.listing() if mtime <= oldest]
        deleted = 0
        for start in range(0, len(old), batch):
            for sha256 in unreferenced(old[start : start + batch]):
                if self._mtime(sha256) <= oldest:  # a `put` of the same content since the listing made it young
                    self.delete(sha256)
                    deleted += 1
        return deleted

    def _mtime(self, sha256: str) -> float:
        try:
            return self.path(sha256).stat().st_mtime
        except FileNotFoundError:
            return float("inf")
