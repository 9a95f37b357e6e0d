"""Labelled frames of a product: calibration frames and operator feedback (their evaluation: decisions.evaluation).

    labelled_frames     one row per frame (service.records.tables), `position` oldest first
    <blobs>/<sha256>    the uploaded file as sent (service.records.blobs), written before its row commits

Bounded per product and per source: at most `max_calibration` frames from POST /calibration and
`max_feedback` from POST /feedback; the oldest go first. Each frame keeps its score against the reference
version that scored it; frames scored by another version are rescored when the references change and are
left out of calibration and evaluation until then. A product delete removes the rows (its blobs go to the
garbage collector). New labels are appended in one transaction that holds the product's row
(`ProductStore.transaction`: every replica's writers of one product take turns). A new reference version
rewrites the whole list with the frames rescored; a label another replica adds during that refit is kept only
if it lands after it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
from sqlalchemy import Connection, delete, insert, select

from model import Frame
from service.products.store import ProductMissing, ProductStore
from service.records.tables import labelled_frames

log = logging.getLogger(__name__)

Label = Literal["good", "defect"]
Source = Literal["calibration", "feedback"]


@dataclass(frozen=True)
class LabelledFrame:
    """One labelled frame of a product: label, source, when, and its score against reference version `version`."""

    frame_id: str
    label: Label
    source: Source
    time: str
    filename: str | None
    inspection_id: str | None
    score: float | None  # decision score (Prediction.decision_score) against reference `version`
    map_max: float | None
    version: int | None
    pixel_hash: str | None = None  # pixel_digest of the decoded frame; None for frames labelled before it was kept
    sha256: str | None = None  # the blob of the uploaded file, None until stored
    file_bytes: int = 0

    @property
    def file_name(self) -> str:
        """A name for the frame's file in messages: <frame_id>.img."""
        return f"{self.frame_id}.img"

    def scored(self, score: float, map_max: float, version: int) -> LabelledFrame:
        """A copy with the score, map maximum and the reference version that produced them."""
        return replace(self, score=score, map_max=map_max, version=version)


def new_frame(
    label: Label,
    source: Source,
    time: str,
    filename: str | None,
    inspection_id: str | None = None,
    pixel_hash: str | None = None,
) -> LabelledFrame:
    """A new, unscored LabelledFrame with a random id."""
    return LabelledFrame(uuid.uuid4().hex, label, source, time, filename, inspection_id, None, None, None, pixel_hash)


def pixel_digest(frame: Frame) -> str:
    """A hash (32 hex digits) of a decoded frame's pixels, mode and size: the same frame re-encoded (PNG, lossless
    TIFF, another compression level) hashes the same; any changed pixel does not."""
    pixels = frame.pixels
    digest = hashlib.blake2b(digest_size=16)
    if isinstance(pixels, np.ndarray):
        digest.update(f"{pixels.dtype.str}{pixels.shape}".encode())
        digest.update(np.ascontiguousarray(pixels).tobytes())
    else:
        digest.update(f"{pixels.mode}{pixels.size}".encode())
        digest.update(pixels.tobytes())
    digest.update(f"{frame.camera_size}".encode())
    return digest.hexdigest()


def first_seen(stored: list[LabelledFrame], new: list[LabelledFrame]) -> list[int]:
    """Indices of the `new` frames that are no duplicate: a frame with the pixels and label of a stored frame or of
    an earlier new one counts once (frames without a pixel hash are never duplicates)."""
    seen = {(f.pixel_hash, f.label) for f in stored if f.pixel_hash is not None}
    kept = []
    for index, frame in enumerate(new):
        key = (frame.pixel_hash, frame.label)
        if frame.pixel_hash is None or key not in seen:
            kept.append(index)
            seen.add(key)
    return kept


def relabelled(stored: list[LabelledFrame], new: list[LabelledFrame]) -> list[LabelledFrame]:
    """`stored` + `new`, where a new label of an inspection, or of the same pixels, replaces the earlier label (an
    operator correcting one): one label per inspection id and per frame's pixels. Frames sent as images (no
    inspection id) with pixels not stored yet are always added."""
    replaced = {f.frame_id for frame in new for f in relabelled_away(stored, frame)}
    return [f for f in stored if f.frame_id not in replaced] + new


def relabelled_away(stored: list[LabelledFrame], new: LabelledFrame) -> list[LabelledFrame]:
    """The stored frames that a new label replaces: those of its inspection id or of its pixels."""
    return [
        f
        for f in stored
        if (new.inspection_id is not None and f.inspection_id == new.inspection_id)
        or (new.pixel_hash is not None and f.pixel_hash == new.pixel_hash)
    ]


def bounded(frames: list[LabelledFrame], max_calibration: int, max_feedback: int) -> list[LabelledFrame]:
    """The newest `max_calibration` calibration frames and `max_feedback` feedback frames, oldest first."""
    limits = {"calibration": max_calibration, "feedback": max_feedback}
    kept: list[LabelledFrame] = []
    counts = dict.fromkeys(limits, 0)
    for frame in reversed(frames):
        if counts[frame.source] < limits[frame.source]:
            counts[frame.source] += 1
            kept.append(frame)
    return kept[::-1]


def calibration_values(frames: list[LabelledFrame], version: int) -> tuple[list[float], list[float]]:
    """(scores, map maxima) of the good frames scored by `version`: the calibration set."""
    good = [f for f in frames if f.label == "good" and f.version == version and f.score is not None]
    return [f.score for f in good], [f.map_max for f in good]


COLUMNS = {  # LabelledFrame field -> labelled_frames column, where they differ
    "version": "scored_version",
    "file_bytes": "bytes",
}


def frame_row(product_id: str, position: int, frame: LabelledFrame) -> dict[str, Any]:
    """The labelled_frames row of a stored frame."""
    fields = {name: getattr(frame, name) for name in LabelledFrame.__dataclass_fields__}
    return {"product_id": product_id, "position": position, **{COLUMNS.get(k, k): v for k, v in fields.items()}}


def row_frame(row: Any) -> LabelledFrame:
    """The LabelledFrame of a labelled_frames row."""
    return LabelledFrame(**{name: row[COLUMNS.get(name, name)] for name in LabelledFrame.__dataclass_fields__})


class FrameStore:
    """The labelled frames of every product: rows of the records database, files as blobs (module docstring)."""

    def __init__(self, store: ProductStore, max_calibration: int, max_feedback: int) -> None:
        self.store = store
        self.max_calibration = max_calibration
        self.max_feedback = max_feedback
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, product_id: str) -> asyncio.Lock:
        """The asyncio lock that serialises read-modify-write of one product's frames in this process."""
        return self._locks.setdefault(product_id, asyncio.Lock())

    def frames(self, product_id: str) -> list[LabelledFrame]:
        """The product's labelled frames, oldest first ([] when it has none); Unavailable when the database does not
        answer."""
        return self.store.read(lambda c: _stored(c, product_id))

    def image_bytes(self, product_id: str, frame: LabelledFrame) -> bytes:
        """The stored file of a frame, as it was uploaded (its hash checked); raises OSError when it is missing or
        damaged."""
        if frame.sha256 is None:
            raise FileNotFoundError(f"labelled frame {frame.frame_id} of {product_id!r} has no stored file")
        return self.store.blobs.read(frame.sha256)

    def add(self, product_id: str, frames: list[LabelledFrame], new_files: dict[str, bytes]) -> list[LabelledFrame]:
        """Append new frames to the stored ones (bounded) in one transaction holding the product's row, so that
        replicas labelling one product at the same time keep every label; returns what was kept. Raises
        ProductMissing when the product is gone, OSError when a file cannot be stored, Unavailable when the
        database does not answer."""
        frames = self._with_blobs(frames, new_files)
        with self.store.transaction(product_id) as c:
            kept = bounded(relabelled(_stored(c, product_id), frames), self.max_calibration, self.max_feedback)
            _replace(c, product_id, kept)
        return kept

    def save(self, product_id: str, frames: list[LabelledFrame], new_files: dict[str, bytes]) -> list[LabelledFrame]:
        """Replace the product's frames by `frames` (the whole list, oldest first; bounded here), files stored
        first; returns what was kept ([] when the product is gone). OSError / Unavailable as `add`."""
        frames = self._with_blobs(frames, new_files)
        kept = bounded(frames, self.max_calibration, self.max_feedback)
        try:
            with self.store.transaction(product_id) as c:
                _replace(c, product_id, kept)
        except ProductMissing:
            return []
        return kept

    def _with_blobs(self, frames: list[LabelledFrame], new_files: dict[str, bytes]) -> list[LabelledFrame]:
        """The frames, those in `new_files` with their file stored as a blob (durable before any row names it)."""
        stored = []
        for frame in frames:
            data = new_files.get(frame.frame_id)
            if data is not None:
                frame = replace(frame, sha256=self.store.blobs.put(data), file_bytes=len(data))
            stored.append(frame)
        return stored


def _stored(c: Connection, product_id: str) -> list[LabelledFrame]:
    t = labelled_frames.c
    query = select(labelled_frames).where(t.product_id == product_id).order_by(t.position)
    return [row_frame(row._mapping) for row in c.execute(query)]


def _replace(c: Connection, product_id: str, frames: list[LabelledFrame]) -> None:
    c.execute(delete(labelled_frames).where(labelled_frames.c.product_id == product_id))
    if frames:
        c.execute(insert(labelled_frames), [frame_row(product_id, i, f) for i, f in enumerate(frames)])
