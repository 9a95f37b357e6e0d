"""Durable files: the one atomic write of the project, and its one rule.

The rule: content goes to a hidden temporary file beside its target (`.<name>.<random>.tmp`), which is flushed and
fsynced, renamed over the target, and then the folder is fsynced so the rename survives a power cut. Readers see
the old file or the new one, never a part; a crash leaves at most a temporary file, which `is_temporary` names.

Standard library only: the camera client and the product store use it as the model's weight files do.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMPORARY_SUFFIX = ".tmp"


def is_temporary(name: str) -> bool:
    """Whether a file name is one of `atomic_path`'s temporary names (debris when its writer died)."""
    return name.startswith(".") and name.endswith(TEMPORARY_SUFFIX)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to (by any library); on leaving the block it becomes `path` by the
    rule above. On an exception the temporary file is removed and `path` is untouched."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}{TEMPORARY_SUFFIX}"
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically and durably (see the module docstring)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def fsync_file(path: Path) -> None:
    """Flush a file's content to the disk."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_dir(folder: Path) -> None:
    """Make renames in `folder` durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_path(path: Path) -> None:
    """Delete a file, link or folder tree; a missing path is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def sha256_of(path: Path, chunk: int = 1 << 24) -> str:
    """Hex sha256 of a file, read in `chunk`-byte blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
