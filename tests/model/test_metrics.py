"""The seven metrics against independent, obviously-correct computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score

from model.metrics import IMAGE_METRICS, PIXEL_METRICS, aupro, image_metrics, pixel_metrics


def slow_aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3) -> float:
    """Loop over every distinct threshold: FPR over normal pixels, PRO = mean per-region overlap."""
    regions = []
    for image_index in range(masks.shape[0]):
        labels, count = ndimage.label(masks[image_index], structure=np.ones((3, 3)))
        regions += [(image_index, labels == r) for r in range(1, count + 1)]
    normal_scores = maps[~masks]
    points = [(0.0, 0.0)]
    for threshold in np.unique(maps)[::-1]:
        fpr = np.mean(normal_scores >= threshold)
        pro = np.mean([np.mean(maps[i][region] >= threshold) for i, region in regions])
        points.append((fpr, pro))
    area, (x0, y0) = 0.0, points[0]
    for x1, y1 in points[1:]:
        if x1 > fpr_limit:
            y_limit = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            area += (fpr_limit - x0) * (y0 + y_limit) / 2
            break
        area += (x1 - x0) * (y0 + y1) / 2
        x0, y0 = x1, y1
    return area / fpr_limit


def brute_force_f1_max(scores: np.ndarray, labels: np.ndarray) -> float:
    best = 0.0
    for threshold in np.unique(scores):
        predicted = scores >= threshold
        tp = np.sum(predicted & labels)
        fp, fn = np.sum(predicted & ~labels), np.sum(~predicted & labels)
        best = max(best, 2 * tp / (2 * tp + fp + fn))
    return best


def random_case(rng: np.random.Generator, quantised: bool) -> tuple[np.ndarray, np.ndarray]:
    masks = np.zeros((3, 12, 14), dtype=bool)
    for image_index in (0, 1):  # image 2 stays normal
        masks[image_index] = ndimage.gaussian_filter(rng.random((12, 14)), 1.5) > 0.55
    masks[0, 0, 0] = True  # guarantees a region, one pixel at a corner
    maps = rng.random(masks.shape) + 0.4 * masks  # (3, 12, 14)
    return (np.round(maps * 8) / 8 if quantised else maps), masks  # quantised: many tied scores


@pytest.mark.parametrize("seed", range(6))
def test_fast_aupro_matches_threshold_loop(seed: int) -> None:
    maps, masks = random_case(np.random.default_rng(seed), quantised=seed % 2 == 1)
    assert aupro(maps, masks) == pytest.approx(slow_aupro(maps, masks), abs=1e-9)


def test_aupro_uses_8_connectivity_within_each_image() -> None:
    masks = np.zeros((2, 6, 6), dtype=bool)
    masks[0, 1, 1] = masks[0, 2, 2] = True  # diagonal neighbours: one region of 2 pixels
    masks[1, 0, 0] = True  # a region in another image, never merged with the first
    maps = np.zeros((2, 6, 6))
    maps[0, 1, 1] = 1.0  # half of region 1 found above every normal pixel, region 2 missed
    # From FPR 0 up to the last threshold, PRO = 0.25; at threshold 0 everything is in: (1, 1).
    expected = (0.25 * 0.3 + 0.3 * 0.3 * 0.75 / 2) / 0.3
    assert aupro(maps, masks) == pytest.approx(expected)
    assert slow_aupro(maps, masks) == pytest.approx(expected)


def test_pixel_metrics_match_sklearn_and_brute_force() -> None:
    maps, masks = random_case(np.random.default_rng(7), quantised=True)
    result = pixel_metrics(maps, masks)
    assert set(result) == set(PIXEL_METRICS)
    assert result["p_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()))
    assert result["p_ap"] == pytest.approx(average_precision_score(masks.ravel(), maps.ravel()))
    assert result["p_f1_max"] == pytest.approx(brute_force_f1_max(maps.ravel(), masks.ravel()))
    assert result["p_pro"] == pytest.approx(slow_aupro(maps, masks))


def test_image_metrics_match_sklearn_and_brute_force() -> None:
    rng = np.random.default_rng(3)
    labels = rng.random(40) < 0.4
    scores = np.round(rng.random(40) + 0.5 * labels, 1)  # ties included
    result = image_metrics(scores, labels.astype(int))
    assert set(result) == set(IMAGE_METRICS)
    assert result["i_auroc"] == pytest.approx(roc_auc_score(labels, scores))
    assert result["i_aupr"] == pytest.approx(average_precision_score(labels, scores))
    assert result["i_f1_max"] == pytest.approx(brute_force_f1_max(scores, labels))


def test_perfect_predictions_score_one() -> None:
    masks = np.zeros((4, 16, 16), dtype=bool)
    masks[0, 2:6, 3:9] = masks[1, 10:14, 10:12] = masks[1, 0, 0] = True
    maps = masks * 2.0 + 0.1  # anomalous pixels strictly above every normal one
    assert pixel_metrics(maps, masks) == pytest.approx(dict.fromkeys(PIXEL_METRICS, 1.0))
    assert image_metrics([0.1, 0.9, 0.2, 0.8], [0, 1, 0, 1]) == pytest.approx(dict.fromkeys(IMAGE_METRICS, 1.0))


def test_random_predictions_score_about_half() -> None:
    rng = np.random.default_rng(0)
    masks = np.zeros((8, 32, 32), dtype=bool)
    masks[:4, 8:24, 8:24] = True  # a quarter of the pixels of half the images
    result = pixel_metrics(rng.random(masks.shape), masks)
    assert result["p_auroc"] == pytest.approx(0.5, abs=0.02)
    assert result["p_ap"] == pytest.approx(masks.mean(), abs=0.02)  # chance AP = positive fraction
    assert result["p_pro"] == pytest.approx(0.15, abs=0.02)  # PRO ~ FPR: area 0.3**2 / 2, over 0.3
    labels = np.arange(400) % 2
    assert image_metrics(rng.random(400), labels)["i_auroc"] == pytest.approx(0.5, abs=0.07)


def test_inverted_predictions_score_zero_auroc() -> None:
    masks = np.zeros((2, 8, 8), dtype=bool)
    masks[0, :4] = True
    result = pixel_metrics(~masks * 1.0, masks)
    assert result["p_auroc"] == 0.0
    assert result["p_pro"] == 0.0


@pytest.mark.parametrize(
    ("maps", "masks", "message"),
    [
        (np.zeros((2, 4, 4)), np.zeros((2, 4, 4), dtype=bool), "all pixels are normal"),
        (np.zeros((2, 4, 4)), np.ones((2, 4, 4), dtype=bool), "all pixels are anomalous"),
        (np.zeros((4, 4)), np.eye(4, dtype=bool), r"\(N, H, W\)"),
        (np.zeros((1, 4, 4)), np.zeros((1, 4, 5), dtype=bool), "equal shape"),
        (np.full((1, 2, 2), np.nan), np.eye(2, dtype=bool)[None], "finite"),
        (np.zeros((1, 2, 2)), np.full((1, 2, 2), 255), "bool or 0/1"),
    ],
)
def test_pixel_metrics_reject_degenerate_input(maps: np.ndarray, masks: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pixel_metrics(maps, masks)


def test_image_metrics_reject_one_class_and_bad_shapes() -> None:
    with pytest.raises(ValueError, match="all images are normal"):
        image_metrics([0.1, 0.2], [0, 0])
    with pytest.raises(ValueError, match="equal length"):
        image_metrics([0.1, 0.2, 0.3], [0, 1])
