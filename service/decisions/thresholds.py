"""Per-product decision thresholds from normal values only (the rule; no model here: see decisions.calibration).

Scales: the verdict compares `decision_score` with `threshold` on one scale, named in every response:
"distance" in training-free mode (memory-bank cosine distance, >= 0) and "logit" in full mode (the image
logit y, unbounded, so a threshold above every normal logit is always reachable; sigmoid(y) would saturate).

Normal values (v):
- reference values: leave-one-out when K >= 2 (each reference against the other K-1; in training-free mode
  from the cached reference tokens, no backbone pass), else augmented views of the single reference;
- views: with K >= 2, six jittered views of the references (small rotations and shifts with reflected
  borders, brightness +-10 %) scored against all K: what a re-shot of a good part scores. Flips are left out
  on purpose: a mirrored part (text, asymmetric features) is not a normal part;
- calibration frames: extra good frames (POST /products/{id}/calibration, feedback labelled `good`) scored
  against all K references, as production frames are.

Rules (the same for `threshold` on scores and `pixel_threshold` on anomaly-map maxima):
- real = leave-one-out values + calibration frames; u = real + views; n = len(real).
- floor = max(FLOOR_FRACTION * (max(views) - min(u)), ABSOLUTE_FLOOR[scale]): the margin never drops below
  half the re-shot spread of this backbone on this product, nor below an absolute minimum.
- "max-margin" while n < ceil(1 / target_false_alarm_rate):
  threshold = max(u) + max(3 * std(s), 0.1 * |max(u)| (distance scale only), floor), where s = real when it
  has two values or more, else the views: the views count in the maximum and the floor, but their spread
  (brightness views score low) would only inflate the margin. A lone real value stays out of s: it is often
  the maximum already, and counted in the spread too its distance from the views came back about once more
  as margin (one good frame at 1.75 over views near 0.4 put the threshold at 3.5, above the distance scale).
- "quantile" once n >= ceil(1 / target_false_alarm_rate):
  threshold = max(Q(real, 1 - target_false_alarm_rate), median(real) + floor), Q the empirical quantile
  (an observed value): about that fraction of good frames is flagged.
- provisional while n < min_frames (or the values are only augmented views).

Reachable thresholds (`SCORE_RANGE`): distances lie in [0, 2] (1 - cosine), logits are unbounded. A threshold at or
above the scale's maximum rejects nothing; one below every normal value rejects every good part. Either is
"unusable" (`unusable_warnings`); the service refuses or flags such changes (docs/thresholds.md). A change of the
calibrated threshold by more than CONFIRM_FACTOR (x1.5 or /1.5 on distances; of its height above the median normal
value on logits, which have no zero) is a "large change" (`large_change`), which the service applies only when
asked to.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np

from model import Prediction

ScoreScale = Literal["logit", "distance"]
PROVISIONAL_WARNING = "provisional threshold"  # starts the warning; a manual threshold drops it
MARGIN_SIGMAS = 3.0
MARGIN_FRACTION = 0.1
FLOOR_FRACTION = 0.5
ABSOLUTE_FLOOR: dict[str, float] = {"distance": 0.01, "logit": 0.5}
MAX_MARGIN_RULE = "max(u) + max(3 * std(real if n >= 2 else views), 0.1 * |max(u)| (distance scale only), floor)"
QUANTILE_RULE = "max(Q(real, 1 - target_false_alarm_rate), median(real) + floor)"
FLOOR_RULE = "floor = max(0.5 * (max(views) - min(u)), 0.01 (distance) | 0.5 (logit))"
# the scores each scale can produce (closed): 1 - cosine in [0, 2]; the logit is unbounded
SCORE_RANGE: dict[str, tuple[float, float]] = {"distance": (0.0, 2.0), "logit": (-math.inf, math.inf)}
UNUSABLE_WARNING = "unusable threshold"  # starts the warnings of a threshold that rejects nothing or everything
CONFIRM_FACTOR = 1.5  # good frames moving the threshold more than this (either way) need force=true


@dataclass(frozen=True)
class CalibrationPolicy:
    """Service settings that shape the rule."""

    target_false_alarm_rate: float = 0.02
    min_frames: int = 10  # fewer real normal frames than this: provisional

    @property
    def quantile_min_frames(self) -> int:
        """Real normal frames needed before the quantile rule replaces max-margin: ceil(1 / target_false_alarm_rate)."""
        return math.ceil(1.0 / self.target_false_alarm_rate - 1e-9)


def score_scale(mode: str) -> ScoreScale:
    """The decision-score scale of a detector mode: "logit" in full mode, else "distance"."""
    return "logit" if mode == "full" else "distance"


@dataclass(frozen=True)
class Calibration:
    """A product's thresholds and every normal value and rule behind
    them (stored with each version; see the module docstring)."""

    method: str  # reference values: "leave-one-out" or "augmented-views"
    normal_scores: list[float]  # reference values (leave-one-out or augmented views), on `score_scale`
    normal_map_maxima: list[float]
    threshold: float  # decision score above it -> anomalous
    pixel_threshold: float  # anomaly-map value above it -> in the mask
    rule: str = MAX_MARGIN_RULE
    score_scale: ScoreScale = "distance"
    view_scores: list[float] = field(default_factory=list)  # K >= 2: jittered views against all references
    view_map_maxima: list[float] = field(default_factory=list)
    frame_scores: list[float] = field(default_factory=list)  # calibration frames against all references
    frame_map_maxima: list[float] = field(default_factory=list)
    threshold_method: str = "max-margin"  # or "quantile"
    n_calibration: int = 0  # real normal frames behind `threshold` (leave-one-out + calibration frames)
    n_pixel_calibration: int = 0  # the same frames' map maxima behind `pixel_threshold`
    n_views: int = 0  # augmented views in the rule
    provisional: bool = True
    margin_floor: float = 0.0
    pixel_margin_floor: float = 0.0
    normal_median: float = 0.0  # median of u: the centre for the relative score in metrics
    target_false_alarm_rate: float = 0.02
    reference_warnings: list[str] = field(default_factory=list)  # found when the references were fit
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The calibration as a JSON-able dict (the inverse of `from_dict`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Calibration:
        """A Calibration from stored JSON, unknown keys ignored; one stored before score scales were recorded gets a
        warning to recalibrate."""
        known = {name for name in cls.__dataclass_fields__}
        calibration = cls(**{k: v for k, v in raw.items() if k in known})
        if "score_scale" not in raw:  # stored before scales were recorded: full-mode values were sigmoid(y)
            legacy = "calibrated before score scales were recorded: upload the references again to recalibrate"
            calibration = replace(calibration, warnings=[*calibration.warnings, legacy])
        return calibration

    def relative(self, score: float, threshold: float) -> float:
        """0 at the median normal value, 1 at the threshold: comparable across products and scales."""
        span = threshold - self.normal_median
        return (score - self.normal_median) / span if span > 0 else float("inf")


@dataclass(frozen=True)
class RuleResult:
    """One threshold from `apply_rule`: its value, the rule used (max-margin or quantile), the margin floor and the
    median of u."""

    threshold: float
    method: str
    floor: float
    median: float


def apply_rule(real: Sequence[float], views: Sequence[float], scale: str, policy: CalibrationPolicy) -> RuleResult:
    """The documented rule (module docstring) on one kind of values (image scores or map maxima)."""
    real_arr, views_arr = np.asarray(real, dtype=np.float64), np.asarray(views, dtype=np.float64)
    u = np.concatenate([real_arr, views_arr])
    assert u.size > 0 and np.isfinite(u).all(), "calibration needs finite normal values"
    spread = float(views_arr.max() - u.min()) if views_arr.size else 0.0
    floor = max(FLOOR_FRACTION * spread, ABSOLUTE_FLOOR[scale])
    median = float(np.median(u))
    if real_arr.size >= policy.quantile_min_frames:
        quantile = float(np.quantile(real_arr, 1.0 - policy.target_false_alarm_rate, method="higher"))
        return RuleResult(max(quantile, float(np.median(real_arr)) + floor), "quantile", floor, median)
    highest = float(u.max())
    relative = MARGIN_FRACTION * abs(highest) if scale == "distance" else 0.0
    spread_of = real_arr if real_arr.size >= 2 else views_arr if views_arr.size else u
    margin = max(MARGIN_SIGMAS * float(spread_of.std()), relative, floor)
    return RuleResult(highest + margin, "max-margin", floor, median)


def derive(
    method: str,
    normal: tuple[list[float], list[float]],
    views: tuple[list[float], list[float]],
    frames: tuple[list[float], list[float]],
    scale: ScoreScale,
    policy: CalibrationPolicy,
    reference_warnings: Sequence[str] = (),
) -> Calibration:
    """A Calibration from (scores, map maxima) of each kind of normal values; pure, no model."""
    loo = method == "leave-one-out"
    real = (normal[0] if loo else []) + frames[0], (normal[1] if loo else []) + frames[1]
    jitter = views[0] + ([] if loo else normal[0]), views[1] + ([] if loo else normal[1])
    image = apply_rule(real[0], jitter[0], scale, policy)
    pixel = apply_rule(real[1], jitter[1], "distance", policy)
    n_real = len(real[0])
    provisional = n_real < policy.min_frames
    warnings = list(reference_warnings)
    if provisional:
        rests_on = f"{n_real} normal frame(s)" + (f" and {len(jitter[0])} augmented views" if jitter[0] else "")
        warnings.append(
            f"{PROVISIONAL_WARNING}: it rests on {rests_on}; add good frames with POST /products/<id>/calibration "
            f"(at least {policy.min_frames} frames)"
        )
    values = np.asarray(real[0] + jitter[0])
    if float(values.max() - values.min()) < ABSOLUTE_FLOOR[scale]:
        warnings.append(
            f"degenerate calibration: the normal scores span only {float(values.max() - values.min()):.3g} "
            f"({scale} scale): the margin rests on the rule's minimums (floor {image.floor:.3g}), not on observed "
            "variation; add frames of different good parts"
        )
    return Calibration(
        method=method,
        normal_scores=list(normal[0]),
        normal_map_maxima=list(normal[1]),
        threshold=image.threshold,
        pixel_threshold=pixel.threshold,
        rule=(QUANTILE_RULE if image.method == "quantile" else MAX_MARGIN_RULE) + "; " + FLOOR_RULE,
        score_scale=scale,
        view_scores=list(views[0]),
        view_map_maxima=list(views[1]),
        frame_scores=list(frames[0]),
        frame_map_maxima=list(frames[1]),
        threshold_method=image.method,
        n_calibration=n_real,
        n_pixel_calibration=len(real[1]),
        n_views=len(jitter[0]),
        provisional=provisional,
        margin_floor=image.floor,
        pixel_margin_floor=pixel.floor,
        normal_median=image.median,
        target_false_alarm_rate=policy.target_false_alarm_rate,
        reference_warnings=list(reference_warnings),
        warnings=warnings,
    )


def recalibrate(
    calibration: Calibration, frames: tuple[list[float], list[float]], policy: CalibrationPolicy
) -> Calibration:
    """The same reference values with a new calibration set: (scores, map maxima) of good frames scored against
    the current references."""
    return derive(
        calibration.method,
        (calibration.normal_scores, calibration.normal_map_maxima),
        (calibration.view_scores, calibration.view_map_maxima),
        frames,
        calibration.score_scale,
        policy,
        calibration.reference_warnings,
    )


def values_of(predictions: Sequence[Prediction], keep: Sequence[bool] | None = None) -> tuple[list[float], list[float]]:
    """(decision scores, map maxima) of the predictions (those where `keep` is true, when given)."""
    kept = [p for i, p in enumerate(predictions) if keep is None or keep[i]]
    return [p.decision_score for p in kept], [p.map_max for p in kept]


def normal_values(calibration: Calibration) -> tuple[list[float], list[float]]:
    """(image scores, map maxima) of every normal value behind a calibration: reference values, views, frames."""
    scores = [*calibration.normal_scores, *calibration.view_scores, *calibration.frame_scores]
    return scores, [*calibration.normal_map_maxima, *calibration.view_map_maxima, *calibration.frame_map_maxima]


def above_the_scale(value: float, scale: str, what: str = "threshold") -> str | None:
    """Why `value` rejects nothing on `scale` (at or above the highest value the scale has: no score or map value
    can exceed it), or None. Anomaly maps share the image score's scale in training-free mode (distances); in full
    mode both are unbounded."""
    highest = SCORE_RANGE[scale][1]
    if value < highest:
        return None
    return f"{what} {value:.4g} is at or above {highest:g}, the highest {scale} value: nothing can be rejected"


def below_every_normal_score(threshold: float, calibration: Calibration) -> str | None:
    """Why `threshold` rejects every good part (below every normal score of the calibration), or None."""
    scores = normal_values(calibration)[0]
    if not scores or threshold >= min(scores):
        return None
    lowest = min(scores)
    return f"threshold {threshold:.4g} is below every normal score (lowest {lowest:.4g}): every good part is rejected"


def unusable_warnings(threshold: float, pixel_threshold: float, calibration: Calibration) -> list[str]:
    """The warnings of thresholds in force that reject nothing or every good part ([] when both are usable)."""
    scale = calibration.score_scale
    problems = [
        above_the_scale(threshold, scale),
        below_every_normal_score(threshold, calibration),
        above_the_scale(pixel_threshold, scale, "pixel threshold"),
    ]
    fix = "set one with PUT /products/<id>/threshold, or add good frames with POST /products/<id>/calibration"
    return [f"{UNUSABLE_WARNING}: {problem}; {fix}" for problem in problems if problem]


def unreachable_calibration(calibration: Calibration) -> str | None:
    """Why a calibration's thresholds would reject nothing (either one above its scale), or None."""
    scale = calibration.score_scale
    return above_the_scale(calibration.threshold, scale) or above_the_scale(
        calibration.pixel_threshold, scale, "pixel threshold"
    )


@dataclass(frozen=True)
class ThresholdChange:
    """A calibrated threshold moving by more than CONFIRM_FACTOR: from `threshold` to `proposed`; `factor` is the
    new height over the old one (see `large_change`); `name`: "threshold" (the image threshold) or
    "pixel threshold"."""

    threshold: float
    proposed: float
    factor: float
    name: str = "threshold"


def large_change(before: Calibration, after: Calibration) -> ThresholdChange | None:
    """The change of the image threshold from `before` to `after` when its height grows beyond CONFIRM_FACTOR or
    shrinks below 1 / CONFIRM_FACTOR, else None. The height is measured from the scale's lowest value (distance: 0,
    so a plain ratio) or, on the unbounded logit scale, from `before`'s median normal value; each height counts as
    at least the scale's absolute floor, so a tiny one does not make every change look large."""
    lowest = SCORE_RANGE[before.score_scale][0]
    base = lowest if math.isfinite(lowest) else before.normal_median
    return _large(before.threshold, after.threshold, base, ABSOLUTE_FLOOR[before.score_scale], "threshold")


def large_pixel_change(before: Calibration, after: Calibration) -> ThresholdChange | None:
    """The same for the pixel threshold (always on the distance scale: a plain ratio), which draws the mask and the
    regions and, with acceptance rules, decides the verdict."""
    return _large(before.pixel_threshold, after.pixel_threshold, 0.0, ABSOLUTE_FLOOR["distance"], "pixel threshold")


def _large(before: float, after: float, base: float, floor: float, name: str) -> ThresholdChange | None:
    factor = max(after - base, floor) / max(before - base, floor)
    if 1.0 / CONFIRM_FACTOR <= factor <= CONFIRM_FACTOR:
        return None
    return ThresholdChange(before, after, factor, name)
