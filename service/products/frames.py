"""Labelled frames of a product: calibration frames and operator feedback (their evaluation: decisions.evaluation).

    products/<id>/frames/index.json     {"frames": [LabelledFrame, ...]} oldest first, replaced atomically
    products/<id>/frames/<frame_id>.img the uploaded file as sent

Bounded per product and per source: at most `max_calibration` frames from POST /calibration and
`max_feedback` from POST /feedback; the oldest go first. Each frame keeps its score against the reference
version that scored it; frames scored by another version are rescored when the references change and are
left out of calibration and evaluation until then. Files live inside the product folder, so a product delete
removes them and replicas sharing the data dir see them. New labels are appended under the product's writer
lock (`ProductStore.locked`, shared by every replica). A new reference version rewrites the whole list with
the frames rescored; a label another replica adds during that refit is kept on disk only if it lands after it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from contextlib import suppress
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from model import Frame, remove_path, write_atomic
from service.products.files import write_json_atomic
from service.products.store import ProductStore

log = logging.getLogger(__name__)

Label = Literal["good", "defect"]
Source = Literal["calibration", "feedback"]
FRAMES_DIR = "frames"
INDEX = "index.json"


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
    pixel_hash: str | None = None  # pixel_digest of the decoded frame; None in indexes written before it was kept

    @property
    def file_name(self) -> str:
        """The frame file's name in the frames folder: <frame_id>.img."""
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


class FrameStore:
    """The labelled frames of every product, stored under products/<id>/frames/ (see the module docstring)."""

    def __init__(self, store: ProductStore, max_calibration: int, max_feedback: int) -> None:
        self.store = store
        self.max_calibration = max_calibration
        self.max_feedback = max_feedback
        self._locks: dict[str, asyncio.Lock] = {}
        self._unreadable: set[tuple[Path, int]] = set()  # index files (and mtimes) already logged as unreadable

    def lock(self, product_id: str) -> asyncio.Lock:
        """The asyncio lock that serialises read-modify-write of one product's frames in this process."""
        return self._locks.setdefault(product_id, asyncio.Lock())

    def _dir(self, product_id: str) -> Path:
        return self.store.product_file(product_id, FRAMES_DIR)

    def frames(self, product_id: str) -> list[LabelledFrame]:
        """The product's labelled frames from its index, oldest first ([] when it has none, or when the index is
        unreadable: logged once per file version, and the next label writes a new index)."""
        index = self._dir(product_id) / INDEX
        if not index.is_file():
            return []
        try:
            return [LabelledFrame(**raw) for raw in json.loads(index.read_text())["frames"]]
        except (ValueError, TypeError, KeyError) as err:  # ValueError: JSON and UTF-8 errors
            self._log_unreadable(index, err)
            return []

    def _log_unreadable(self, index: Path, err: Exception) -> None:
        version = (index, index.stat().st_mtime_ns)
        if version not in self._unreadable:
            self._unreadable.add(version)
            log.error(
                "%s is unreadable (%s: %s): its labelled frames are left out until the next label rewrites it",
                index,
                type(err).__name__,
                err,
            )

    def image_bytes(self, product_id: str, frame: LabelledFrame) -> bytes:
        """The stored file of a frame, as it was uploaded; raises OSError when it is missing."""
        return (self._dir(product_id) / frame.file_name).read_bytes()

    def add(self, product_id: str, frames: list[LabelledFrame], new_files: dict[str, bytes]) -> list[LabelledFrame]:
        """Append new frames to the stored ones (bounded) under the product's lock, so that replicas labelling
        one product at the same time keep every label; returns what was kept. Raises ProductMissing when the
        product is gone."""
        with self.store.locked(product_id):
            return self.save(product_id, relabelled(self.frames(product_id), frames), new_files)

    def save(self, product_id: str, frames: list[LabelledFrame], new_files: dict[str, bytes]) -> list[LabelledFrame]:
        """Write the new frames' files, then the index (atomically), then drop files no longer listed.
        `frames` is the whole list, oldest first; it is bounded here. Returns what was kept."""
        folder = self._dir(product_id)
        kept = bounded(frames, self.max_calibration, self.max_feedback)
        if not kept and not folder.is_dir():
            return []  # a product without labelled frames has no frames folder
        created = not folder.is_dir()
        folder.mkdir(exist_ok=True)
        listed = {f.file_name for f in kept}
        new = [f for f in kept if f.frame_id in new_files]
        try:
            for frame in new:
                write_atomic(folder / frame.file_name, new_files[frame.frame_id])
            write_json_atomic(folder / INDEX, {"frames": [asdict(f) for f in kept]})
        except BaseException:  # a full disk: the index still lists the old frames, whose files are untouched
            for frame in new:
                remove_path(folder / frame.file_name)
            if created:
                with suppress(OSError):
                    folder.rmdir()
            raise
        for entry in folder.iterdir():
            if entry.name.endswith(".img") and entry.name not in listed:
                remove_path(entry)
        return kept
