"""Per-product decision thresholds from the product's own normal references.

Normal examples: leave-one-out when K >= 2 (fit on K-1 references, score the held-out one), else augmented
views of the single reference (small rotations and shifts with reflected borders, brightness +-10%).
Flips are left out on purpose: a mirrored part (text, asymmetric features) is not a normal part.

Rule (the same for both thresholds): threshold = max(v) + max(3 * std(v), 0.1 * |max(v)|), where v are the
normal image scores (-> `threshold`, for the verdict) or the maxima of the normal anomaly maps
(-> `pixel_threshold`, for the mask). Scores and maps live on different scales in "full" mode, hence two.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

from model import Detector, Prediction, ReferenceSet

MARGIN_SIGMAS = 3.0
MARGIN_FRACTION = 0.1
ROTATIONS_DEG = (3.0, -3.0)
SHIFTS = ((0.02, 0.02), (-0.02, -0.02))  # fractions of width, height
BRIGHTNESS = (0.9, 1.1)
RULE = "max(v) + max(3 * std(v), 0.1 * |max(v)|)"


@dataclass(frozen=True)
class Calibration:
    method: str  # "leave-one-out" or "augmented-views"
    normal_scores: list[float]
    normal_map_maxima: list[float]
    threshold: float  # image score above it -> anomalous
    pixel_threshold: float  # anomaly-map value above it -> in the mask
    rule: str = RULE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Calibration:
        return cls(**raw)


@dataclass(frozen=True)
class FittedProduct:
    refs: ReferenceSet
    calibration: Calibration
    timings_ms: dict[str, float]


def fit_and_calibrate(detector: Detector, images: Sequence[Image.Image]) -> FittedProduct:
    """A product's references and thresholds (runs on the model worker)."""
    start = time.perf_counter()
    refs = detector.fit_references(images)
    fitted = time.perf_counter()
    calibration = calibrate(detector, images, refs)
    timings = {"fit": (fitted - start) * 1000.0, "calibrate": (time.perf_counter() - fitted) * 1000.0}
    return FittedProduct(refs, calibration, timings)


def threshold_rule(values: Sequence[float]) -> float:
    """The documented rule: highest normal value plus a margin."""
    array = np.asarray(values, dtype=np.float64)
    assert array.size > 0 and np.isfinite(array).all(), "calibration needs finite normal values"
    highest = float(array.max())
    return highest + max(MARGIN_SIGMAS * float(array.std()), MARGIN_FRACTION * abs(highest))


def calibrate(detector: Detector, images: Sequence[Image.Image], refs: ReferenceSet) -> Calibration:
    """Thresholds for a product whose references `refs` were fit on `images`."""
    if len(images) >= 2:
        method, predictions = "leave-one-out", leave_one_out(detector, images, refs)
    else:
        method, predictions = "augmented-views", detector.predict(augmented_views(images[0]), refs)
    scores = [float(p.score) for p in predictions]
    maxima = [float(p.anomaly_map.max()) for p in predictions]
    return Calibration(method, scores, maxima, threshold_rule(scores), threshold_rule(maxima))


def leave_one_out(detector: Detector, images: Sequence[Image.Image], refs: ReferenceSet) -> list[Prediction]:
    """Each reference scored against the other K-1 (their features reused: no extra backbone pass for them)."""
    predictions = []
    for held_out in range(len(images)):
        others = detector.subset_references(refs, [i for i in range(len(images)) if i != held_out])
        predictions += detector.predict([images[held_out]], others)
    return predictions


def augmented_views(image: Image.Image) -> list[Image.Image]:
    """Plausible normal variations of one reference: camera jitter and lighting."""
    views = [_rotated(image, angle) for angle in ROTATIONS_DEG]
    views += [_shifted(image, dx, dy) for dx, dy in SHIFTS]
    views += [ImageEnhance.Brightness(image).enhance(factor) for factor in BRIGHTNESS]
    return views


def _reflect_padded(image: Image.Image, pad: int) -> np.ndarray:
    array = np.asarray(image.convert("RGB"))  # (H, W, 3)
    return np.pad(array, ((pad, pad), (pad, pad), (0, 0)), mode="symmetric")  # (H + 2p, W + 2p, 3)


def _rotated(image: Image.Image, angle: float) -> Image.Image:
    width, height = image.size
    pad = math.ceil(max(width, height) * math.sin(math.radians(abs(angle)))) + 1
    rotated = Image.fromarray(_reflect_padded(image, pad)).rotate(angle, resample=Image.Resampling.BILINEAR)
    return rotated.crop((pad, pad, pad + width, pad + height))


def _shifted(image: Image.Image, dx: float, dy: float) -> Image.Image:
    width, height = image.size
    shift_x, shift_y = round(dx * width), round(dy * height)
    pad = max(abs(shift_x), abs(shift_y), 1)
    padded = Image.fromarray(_reflect_padded(image, pad))
    return padded.crop((pad + shift_x, pad + shift_y, pad + shift_x + width, pad + shift_y + height))
