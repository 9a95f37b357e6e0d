"""The frame archive: uploaded files kept by content (sha256) in the data dir, as the retention policy says, so
that any replica sharing the data volume can show a frame or take feedback on it by inspection id."""

from __future__ import annotations

from dataclasses import dataclass

from service.records.blobs import BlobStore, sha256_hex

__all__ = ["FrameArchive", "RetentionPolicy", "sha256_hex"]


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


class FrameArchive(BlobStore):
    """Uploaded frames as blobs under `folder` (service.records.blobs), deleted by the recorder's pruner."""
