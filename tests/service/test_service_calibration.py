"""Threshold calibration: the documented rule, leave-one-out for K >= 2, augmented views for K = 1."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.calibration import augmented_views, calibrate, threshold_rule
from tests.service.conftest import image_bytes


def pil(seed: int = 0, defect: bool = False) -> Image.Image:
    return Image.open(io.BytesIO(image_bytes(56, 48, seed=seed, defect=defect))).convert("RGB")


def test_threshold_rule_adds_three_sigma_or_ten_percent():
    spread = [1.0, 2.0, 3.0]
    assert threshold_rule(spread) == pytest.approx(3.0 + 3 * np.std(spread))
    tight = [2.0, 2.0]
    assert threshold_rule(tight) == pytest.approx(2.2)
    assert threshold_rule([-1.0]) == pytest.approx(-0.9)  # the margin always raises the threshold


def test_augmented_views_keep_the_size_and_differ_from_the_original():
    image = pil()
    views = augmented_views(image)
    assert len(views) == 6
    original = np.asarray(image, dtype=np.float32)
    for view in views:
        assert view.size == image.size
        assert np.abs(np.asarray(view.convert("RGB"), dtype=np.float32) - original).mean() > 0.1


def test_leave_one_out_scores_each_reference_against_the_others(tiny_detector):
    images = [pil(seed) for seed in range(3)]
    refs = tiny_detector.fit_references(images)
    calibration = calibrate(tiny_detector, images, refs)
    assert calibration.method == "leave-one-out"
    expected = tiny_detector.predict([images[1]], tiny_detector.fit_references([images[0], images[2]]))[0].score
    assert calibration.normal_scores[1] == pytest.approx(expected, rel=1e-5)
    assert calibration.threshold == pytest.approx(threshold_rule(calibration.normal_scores))
    assert calibration.pixel_threshold == pytest.approx(threshold_rule(calibration.normal_map_maxima))
    assert calibration.threshold > max(calibration.normal_scores)


def test_single_reference_uses_augmented_views(tiny_detector):
    image = pil()
    calibration = calibrate(tiny_detector, [image], tiny_detector.fit_references([image]))
    assert calibration.method == "augmented-views"
    assert len(calibration.normal_scores) == len(augmented_views(image))
    assert calibration.pixel_threshold > max(calibration.normal_map_maxima)
