"""Calibration with the model: a product's normal values (leave-one-out, jittered views, calibration frames) and
the thresholds `decisions.thresholds` derives from them. These run on the model worker.

Views: with K >= 2, six jittered views of the references (small rotations and shifts with mirrored borders,
brightness +-10 %) scored against all K: what a re-shot of a good part scores. Flips are left out on purpose: a
mirrored part (text, asymmetric features) is not a normal part. With K = 1 the same views of the one reference
are its reference values.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
from PIL import Image, ImageEnhance

from model import Detector, Frame, Prediction, ReferenceSet, rotated
from service.decisions.thresholds import (
    Calibration,
    CalibrationPolicy,
    derive,
    score_scale,
    values_of,
)

DUPLICATE_DISTANCE = 1e-3  # cosine distance of a reference's most different patches to the others' bank
ROTATIONS_DEG = (3.0, -3.0)
SHIFTS = ((0.02, 0.02), (-0.02, -0.02))  # fractions of width, height
BRIGHTNESS = (0.9, 1.1)
SCORE_CHUNK = 8  # calibration frames scored this many at a time


@dataclass(frozen=True)
class FittedProduct:
    """What a fit returns: the references, their calibration, the
    predictions of the given frames and the fit/calibrate times (ms)."""

    refs: ReferenceSet
    calibration: Calibration
    frame_predictions: list[Prediction]  # every frame given, in order (good ones calibrate)
    timings_ms: dict[str, float]


def fit_and_calibrate(
    detector: Detector,
    images: Sequence[Frame],
    frames: Sequence[Frame] = (),
    policy: CalibrationPolicy | None = None,
    good: Sequence[bool] | None = None,
    bit_depth: int | None = None,
) -> FittedProduct:
    """A product's references (fit on `images`) and thresholds; `frames` are scored too and the `good` ones
    (all when None) join the calibration set. bit_depth: see Detector.fit_references."""
    start = time.perf_counter()
    refs = detector.fit_references(images, bit_depth=bit_depth)
    fitted = time.perf_counter()
    calibration, frame_predictions = calibrate(detector, images, refs, frames, policy, good)
    timings = {"fit": (fitted - start) * 1000.0, "calibrate": (time.perf_counter() - fitted) * 1000.0}
    return FittedProduct(refs, calibration, frame_predictions, timings)


def calibrate(
    detector: Detector,
    images: Sequence[Frame],
    refs: ReferenceSet,
    frames: Sequence[Frame] = (),
    policy: CalibrationPolicy | None = None,
    good: Sequence[bool] | None = None,
) -> tuple[Calibration, list[Prediction]]:
    """Thresholds for references `refs` fit on `images`, plus the predictions of `frames` (the `good` ones, all
    when None, are calibration frames)."""
    policy = policy or CalibrationPolicy()
    rgb = [Frame.of(image).rgb(refs.bit_depth) for image in images]  # 16-bit references: views work on RGB
    held_out = detector.held_out_predictions(refs) if refs.n_references >= 2 else []
    if len(rgb) >= 2:
        method, normal = "leave-one-out", leave_one_out(detector, rgb, refs, held_out)
        views = score_frames(detector, reference_views(rgb), refs)
    else:
        method, normal, views = "augmented-views", score_frames(detector, augmented_views(rgb[0]), refs), []
    frame_predictions = score_frames(detector, frames, refs)
    calibration = derive(
        method,
        values_of(normal),
        values_of(views),
        values_of(frame_predictions, good),
        score_scale(detector.mode),
        policy,
        near_duplicate_warnings(held_out),
    )
    return calibration, frame_predictions


def extend_and_calibrate(
    detector: Detector,
    product_refs: ReferenceSet,
    calibration: Calibration,
    images: Sequence[Frame],
    frames: Sequence[Frame],
    good: Sequence[bool],
    policy: CalibrationPolicy,
) -> FittedProduct:
    """References plus `images` (only they pass the backbone); `frames` scored again, the `good` ones calibrate.

    Training-free mode recomputes leave-one-out from the cached tokens; full mode needs the reference images
    for it, which are not stored, so it keeps the previous reference values (they came from fewer references,
    so they err on the high side)."""
    start = time.perf_counter()
    refs = detector.extend_references(product_refs, images)
    fitted = time.perf_counter()
    held_out = detector.held_out_predictions(refs)  # K >= 2: one reference was added
    method, normal = calibration.method, (calibration.normal_scores, calibration.normal_map_maxima)
    if detector.mode == "training-free":
        method, normal = "leave-one-out", values_of(held_out)
    frame_predictions = score_frames(detector, frames, refs)
    new = derive(
        method,
        normal,
        (calibration.view_scores, calibration.view_map_maxima),
        values_of(frame_predictions, good),
        calibration.score_scale,
        policy,
        near_duplicate_warnings(held_out),
    )
    timings = {"fit": (fitted - start) * 1000.0, "calibrate": (time.perf_counter() - fitted) * 1000.0}
    return FittedProduct(refs, new, frame_predictions, timings)


def leave_one_out(
    detector: Detector, images: Sequence[Image.Image], refs: ReferenceSet, held_out: list[Prediction]
) -> list[Prediction]:
    """Each reference scored against the other K-1. Training-free: `held_out` (the detector's leave-one-out from
    the cached tokens, no backbone pass); full mode: the held-out image passes the backbones (the heads need its
    CLIP features)."""
    if detector.mode == "training-free":
        return held_out
    predictions = []
    for index in range(len(images)):
        others = detector.subset_references(refs, [i for i in range(len(images)) if i != index])
        predictions += detector.predict([images[index]], others)
    return predictions


def near_duplicate_warnings(held_out: list[Prediction]) -> list[str]:
    """References whose most different patches are all but identical to another reference's, from the
    training-free leave-one-out predictions (`Detector.held_out_predictions`; none with one reference)."""
    distances = [p.score for p in held_out]
    duplicates = [i for i, d in enumerate(distances) if d < DUPLICATE_DISTANCE]
    if not duplicates:
        return []
    listed = ", ".join(f"#{i} ({distances[i]:.2g})" for i in duplicates)
    return [
        f"near-duplicate references: {listed} differ from another reference by less than {DUPLICATE_DISTANCE} "
        "(cosine distance); upload photos of different good parts"
    ]


def score_frames(detector: Detector, frames: Sequence[Frame | Image.Image], refs: ReferenceSet) -> list[Prediction]:
    """Predictions of `frames` against `refs`, SCORE_CHUNK images per predict call."""
    predictions: list[Prediction] = []
    for start in range(0, len(frames), SCORE_CHUNK):
        predictions += detector.predict(frames[start : start + SCORE_CHUNK], refs)
    return predictions


def reference_views(images: Sequence[Image.Image]) -> list[Image.Image]:
    """The six augmented views, taken in turn from each reference (view i from reference i mod K)."""
    return [view(images[i % len(images)]) for i, view in enumerate(VIEWS)]


def augmented_views(image: Image.Image) -> list[Image.Image]:
    """Plausible normal variations of one reference: camera jitter and lighting."""
    return [view(image) for view in VIEWS]


def _shifted(image: Image.Image, dx: float, dy: float) -> Image.Image:
    width, height = image.size
    shift_x, shift_y = round(dx * width), round(dy * height)
    pad = max(abs(shift_x), abs(shift_y), 1)
    array = np.asarray(image.convert("RGB"))  # (H, W, 3)
    padded = Image.fromarray(np.pad(array, ((pad, pad), (pad, pad), (0, 0)), mode="symmetric"))  # mirrored borders
    return padded.crop((pad + shift_x, pad + shift_y, pad + shift_x + width, pad + shift_y + height))


def _brightened(image: Image.Image, factor: float) -> Image.Image:
    return ImageEnhance.Brightness(image).enhance(factor)


VIEWS = (
    *(partial(rotated, angle=angle) for angle in ROTATIONS_DEG),
    *(partial(_shifted, dx=dx, dy=dy) for dx, dy in SHIFTS),
    *(partial(_brightened, factor=factor) for factor in BRIGHTNESS),
)
