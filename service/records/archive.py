"""The frame archive: uploaded files kept by content (sha256) in the data dir, as the retention policy says, so
that any replica sharing the data volume can show a frame or take feedback on it by inspection id."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RetentionPolicy:
    """Which frames of a product the archive keeps, and for how long."""

    keep_ng: bool  # every anomalous (NG) frame
    keep_ok_every: int  # 0: no OK frame, 1: every one, N: every Nth (counted per replica)
    days: int  # kept this many days after the inspection

    def keeps(self, anomalous: bool, ok_seen: int) -> bool:
        """Whether a frame is archived; `ok_seen` counts the product's OK frames before this one (from 0)."""
        if anomalous:
            return self.keep_ng
        return self.keep_ok_every > 0 and ok_seen % self.keep_ok_every == 0


def sha256_hex(data: bytes) -> str:
    """The frame's content address."""
    return hashlib.sha256(data).hexdigest()


class FrameArchive:
    """Files under `folder`/<2 hex>/<sha256>, written once (temporary file, fsync, rename), deleted by the pruner."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, sha256: str) -> Path:
        """Where the frame with this hash lives (it may not)."""
        return self.folder / sha256[:2] / sha256

    def put(self, data: bytes) -> str:
        """Store `data` (nothing when the same content is there already); returns its sha256. Raises OSError."""
        sha256 = sha256_hex(data)
        target = self.path(sha256)
        if target.exists():
            return sha256
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{sha256}.{os.getpid()}.tmp")
        with temporary.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
        return sha256

    def get(self, sha256: str) -> bytes | None:
        """The frame's bytes, None when it is not (or no longer) kept."""
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError:
            return None

    def has(self, sha256: str) -> bool:
        """Whether the frame is stored."""
        return self.path(sha256).exists()

    def delete(self, sha256: str) -> None:
        """Remove the frame (nothing when it is gone already)."""
        self.path(sha256).unlink(missing_ok=True)
