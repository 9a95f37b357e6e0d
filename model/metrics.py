"""The seven evaluation metrics: i-AUROC, i-AUPR, i-F1-max (image level); p-AUROC, p-AP, p-F1-max, p-PRO (pixel).

All values are fractions in [0, 1]. Degenerate inputs raise ValueError with a clear message rather than
returning NaN: every metric here needs both a normal and an anomalous example (image or pixel), scores
must be finite, and labels/masks must be 0/1.

p-PRO is the MVTec AD AUPRO: connected components of each ground-truth mask (8-connectivity, within one
image) are the regions; at each threshold the PRO is the mean over all regions of the fraction of the
region's pixels scored at or above the threshold, and the FPR is the fraction of all normal pixels at or
above it. The area under PRO(FPR) from FPR 0 to 0.3 (trapezoids, the last point interpolated at 0.3) is
divided by 0.3. The curve is computed exactly at every distinct score, from one sort of all pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import numpy as np
from scipy import ndimage
from scipy.integrate import trapezoid

IMAGE_METRICS = ("i_auroc", "i_aupr", "i_f1_max")
PIXEL_METRICS = ("p_auroc", "p_ap", "p_f1_max", "p_pro")
PRO_FPR_LIMIT = 0.3
IN_PLANE_8_CONNECTED = np.pad(np.ones((1, 3, 3), dtype=bool), ((1, 1), (0, 0), (0, 0)))  # (3, 3, 3)


def image_metrics(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray) -> dict[str, float]:
    """i_auroc, i_aupr (average precision), i_f1_max from per-image scores (higher = anomalous), labels 0/1."""
    scores_arr = _finite_scores(np.asarray(scores, dtype=np.float64), "scores")
    labels_arr = _binary(np.asarray(labels), "labels")
    if scores_arr.ndim != 1 or scores_arr.shape != labels_arr.shape:
        raise ValueError(f"scores and labels must be 1-D of equal length, got {scores_arr.shape}, {labels_arr.shape}")
    _require_both_classes(labels_arr, "images")
    average_precision, best_f1 = precision_recall_metrics(scores_arr, labels_arr)
    return {
        "i_auroc": float(_sklearn().roc_auc_score(labels_arr, scores_arr)),
        "i_aupr": average_precision,
        "i_f1_max": best_f1,
    }


def f1_at_threshold(
    scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray, threshold: float
) -> float:
    """F1 of the verdict `score > threshold` (anomalous = positive); 0.0 when nothing is flagged or anomalous."""
    scores_arr = _finite_scores(np.asarray(scores, dtype=np.float64), "scores")
    labels_arr = _binary(np.asarray(labels), "labels")
    return float(_sklearn().f1_score(labels_arr, scores_arr > threshold, zero_division=0.0))


def pixel_metrics(
    maps: np.ndarray | Sequence[np.ndarray], masks: np.ndarray | Sequence[np.ndarray]
) -> dict[str, float]:
    """p_auroc, p_ap, p_f1_max, p_pro over all pixels of all images. maps (N, H, W) float, masks (N, H, W) bool."""
    maps_arr = _finite_scores(np.asarray(maps), "anomaly maps")
    masks_arr = _binary(np.asarray(masks), "masks")
    if maps_arr.ndim != 3 or maps_arr.shape != masks_arr.shape:
        raise ValueError(
            f"maps and masks must both be (N, H, W) of equal shape, got {maps_arr.shape}, {masks_arr.shape}"
        )
    _require_both_classes(masks_arr, "pixels")
    flat_scores = maps_arr.ravel()  # (N*H*W,)
    flat_labels = masks_arr.ravel()  # (N*H*W,)
    average_precision, best_f1 = precision_recall_metrics(flat_scores, flat_labels)
    return {
        "p_auroc": float(_sklearn().roc_auc_score(flat_labels, flat_scores)),
        "p_ap": average_precision,
        "p_f1_max": best_f1,
        "p_pro": aupro(maps_arr, masks_arr),
    }


def precision_recall_metrics(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(average precision, best F1 over all thresholds `score >= t`) from one precision-recall curve.

    The average precision is scikit-learn's `average_precision_score` (the step-wise sum
    AP = sum_n (R_n - R_{n-1}) P_n), computed here from the same curve as F1 to sort the scores once.
    """
    precision, recall, _ = _sklearn().precision_recall_curve(labels, scores)  # recall decreasing, ends at (P=1, R=0)
    average_precision = -float(np.sum(np.diff(recall) * precision[:-1]))
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    return average_precision, float(f1.max())


def aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = PRO_FPR_LIMIT) -> float:
    """Normalised area under the PRO curve up to `fpr_limit` (see module docstring). maps/masks (N, H, W)."""
    fpr, pro = pro_curve(maps, masks)
    return area_up_to(fpr, pro, fpr_limit) / fpr_limit


def pro_curve(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, pro) at every distinct score, from the highest threshold down, starting at (0, 0)."""
    regions, n_regions = ndimage.label(masks, structure=IN_PLANE_8_CONNECTED)  # (N, H, W) ids, 0 = normal
    if n_regions == 0:
        raise ValueError("PRO needs at least one anomalous region; every mask is empty")
    region_ids = regions.ravel()  # (P,)
    region_sizes = np.bincount(region_ids)  # (n_regions + 1,), [0] = normal pixels
    pro_step = np.zeros(n_regions + 1)
    pro_step[1:] = 1.0 / (n_regions * region_sizes[1:])  # each region's pixels together add 1 / n_regions

    order = np.argsort(maps.ravel(), kind="stable")[::-1]  # (P,) descending score
    sorted_scores = maps.ravel()[order]
    sorted_ids = region_ids[order]
    normal_above = np.cumsum(sorted_ids == 0)  # (P,) normal pixels scored >= this one
    pro = np.cumsum(pro_step[sorted_ids])  # (P,)
    last_of_tie = np.append(np.flatnonzero(np.diff(sorted_scores)), sorted_scores.size - 1)
    fpr = normal_above[last_of_tie] / region_sizes[0]
    return np.concatenate([[0.0], fpr]), np.concatenate([[0.0], np.minimum(pro[last_of_tie], 1.0)])


def area_up_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid area under y(x) from x[0] to x_max; x non-decreasing; y interpolated linearly at x_max."""
    inside = int(np.searchsorted(x, x_max, side="right"))  # points with x <= x_max
    xs, ys = x[:inside], y[:inside]
    if inside < x.size and xs[-1] < x_max:
        y_at_max = ys[-1] + (y[inside] - ys[-1]) * (x_max - xs[-1]) / (x[inside] - xs[-1])
        xs, ys = np.append(xs, x_max), np.append(ys, y_at_max)
    return float(trapezoid(ys, xs))


def _sklearn() -> ModuleType:
    """sklearn.metrics, imported on first use: it takes a second to load, and a server may never evaluate."""
    import sklearn.metrics

    return sklearn.metrics


def _finite_scores(values: np.ndarray, what: str) -> np.ndarray:
    if values.size == 0:
        raise ValueError(f"{what} are empty")
    if not np.issubdtype(values.dtype, np.number) or not np.isfinite(values).all():
        raise ValueError(f"{what} must be finite numbers (found NaN, inf or a non-numeric type)")
    return values


def _binary(values: np.ndarray, what: str) -> np.ndarray:
    if values.dtype == bool:
        return values
    if not np.isin(values, (0, 1)).all():
        raise ValueError(f"{what} must be bool or 0/1, found values {np.unique(values)[:5].tolist()}...")
    return values.astype(bool)


def _require_both_classes(labels: np.ndarray, what: str) -> None:
    n_anomalous = int(labels.sum())
    if n_anomalous == 0 or n_anomalous == labels.size:
        kind = "anomalous" if n_anomalous else "normal"
        raise ValueError(f"all {what} are {kind}: these metrics need both normal and anomalous {what}")
