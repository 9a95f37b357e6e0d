"""Recent inspections: a bounded ring per product, in memory (ids, scores, verdicts, thumbnails), so that
operator feedback can point at a frame by its `inspection_id`. Lost on restart, by design; each replica keeps
its own. The frame's uploaded bytes are kept too, for feedback on that frame: up to MAX_FRAME_BYTES a frame and
FRAME_BUDGET_BYTES a product (the newest frames keep theirs)."""

from __future__ import annotations

import base64
import io
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from PIL import Image

from model.preprocess import rgb_image

THUMBNAIL_SIDE = 160  # longer side, px
THUMBNAIL_QUALITY = 70
MAX_FRAME_BYTES = 16 * 1024 * 1024  # larger uploads keep only their thumbnail
FRAME_BUDGET_BYTES = 64 * 1024 * 1024  # per product: older entries beyond it keep only their thumbnail


def new_inspection_id() -> str:
    """A new random inspection id (32 hex digits)."""
    return uuid.uuid4().hex


def thumbnail_data_url(image: Image.Image, bit_depth: int | None = None) -> str:
    """A JPEG data URL of the image, its longer side at most THUMBNAIL_SIDE px. High-bit grey frames are
    scaled as the model sees them (`model.preprocess.rgb_image`: sBIT, else the product's `bit_depth`)."""
    small = rgb_image(image, bit_depth).copy()
    # reducing_gap=1: box-reduce by the largest whole factor first, then bicubic; ~3x faster than Pillow's
    # default gap of 2 on a 512 px frame, within one grey level on average
    small.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.BICUBIC, reducing_gap=1.0)
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=THUMBNAIL_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


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

    def as_json(self) -> dict[str, Any]:
        """The entry as GET /products/{id}/inspections lists it (without the frame's bytes)."""
        return {
            "inspection_id": self.inspection_id,
            "time": self.time,
            "score": self.score,
            "score_scale": self.score_scale,
            "threshold": self.threshold,
            "anomalous": self.anomalous,
            "filename": self.filename,
            "width": self.width,
            "height": self.height,
            "thumbnail": self.thumbnail,
            "label": self.label,
            "reference_version": self.version,
        }


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
