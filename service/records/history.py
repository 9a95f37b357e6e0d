"""Recent inspections: a bounded ring per product, in memory (ids, scores, verdicts, thumbnails), so that
operator feedback can point at a frame by its `inspection_id`. Lost on restart, by design; each replica keeps
its own. The frame's uploaded bytes are kept too, for feedback on that frame: up to MAX_FRAME_BYTES a frame and
FRAME_BUDGET_BYTES a product (the newest frames keep theirs)."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

MAX_FRAME_BYTES = 16 * 1024 * 1024  # larger uploads keep only their thumbnail
FRAME_BUDGET_BYTES = 64 * 1024 * 1024  # per product: older entries beyond it keep only their thumbnail


@dataclass
class Inspection:
    """One inspected frame as the recent-inspections ring keeps it (score, verdict, thumbnail, uploaded bytes)."""

    inspection_id: str
    product_id: str
    version: int  # the reference version that scored it
    time: str  # ISO 8601 UTC
    score: float
    score_scale: str
    threshold: float
    anomalous: bool
    filename: str | None
    width: int
    height: int
    thumbnail: str
    frame: bytes | None  # the uploaded file, for feedback (None when over MAX_FRAME_BYTES)
    label: str | None = None  # set by operator feedback: "good" or "defect"


def now_iso() -> str:
    """The current UTC time in ISO 8601."""
    return datetime.now(UTC).isoformat()


class InspectionHistory:
    """Thread-safe ring of the last `size` inspections of each product."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._rings: dict[str, deque[Inspection]] = {}
        self._lock = threading.Lock()

    def record(self, inspection: Inspection) -> None:
        """Add an inspection to its product's ring; frames over MAX_FRAME_BYTES, and older ones past FRAME_BUDGET_BYTES
        per product, keep only their thumbnail."""
        if inspection.frame is not None and len(inspection.frame) > MAX_FRAME_BYTES:
            inspection.frame = None
        with self._lock:
            ring = self._rings.setdefault(inspection.product_id, deque(maxlen=self.size))
            ring.append(inspection)
            kept_bytes = 0
            for entry in reversed(ring):
                kept_bytes += len(entry.frame or b"")
                if kept_bytes > FRAME_BUDGET_BYTES:
                    entry.frame = None

    def recent(self, product_id: str, limit: int) -> list[Inspection]:
        """Newest first."""
        with self._lock:
            ring = list(self._rings.get(product_id, ()))
        return ring[::-1][:limit]

    def find(self, product_id: str, inspection_id: str) -> Inspection | None:
        """The product's inspection with this id if still in the ring, else None."""
        with self._lock:
            return next((i for i in self._rings.get(product_id, ()) if i.inspection_id == inspection_id), None)

    def set_label(self, product_id: str, inspection_id: str, label: str) -> None:
        """Record an operator's label on the inspection with this id (nothing when it left the ring)."""
        with self._lock:
            for inspection in self._rings.get(product_id, ()):
                if inspection.inspection_id == inspection_id:
                    inspection.label = label

    def forget(self, product_id: str) -> None:
        """Drop the product's ring (after the product is deleted)."""
        with self._lock:
            self._rings.pop(product_id, None)
