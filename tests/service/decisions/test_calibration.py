"""Threshold calibration: the documented rules (max-margin with a floor, quantile), the score scales, leave-one-out
from cached tokens, augmented views, and the fail-safe cases (identical references, featureless frames)."""

from __future__ import annotations

import io
import math
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from model import create_detector
from service.decisions.calibration import augmented_views, calibrate
from service.decisions.thresholds import (
    ABSOLUTE_FLOOR,
    SCORE_RANGE,
    Calibration,
    CalibrationPolicy,
    apply_rule,
    derive,
    large_change,
    large_pixel_change,
    recalibrate,
    unreachable_calibration,
    unusable_warnings,
)
from tests.helpers.images import image_bytes

POLICY = CalibrationPolicy(target_false_alarm_rate=0.05, min_frames=5)


def pil(seed: int = 0, defect: bool = False) -> Image.Image:
    return Image.open(io.BytesIO(image_bytes(56, 48, seed=seed, defect=defect))).convert("RGB")


def reshot(image: Image.Image, seed: int = 3) -> Image.Image:
    """The same part photographed again: one pixel of camera shift and sensor noise."""
    array = np.roll(np.asarray(image, dtype=np.float64), 1, axis=1)
    array += np.random.default_rng(seed).normal(0, 3, array.shape)
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def full_detector():
    """The tiny config with untrained (random) heads: full mode, scores on the logit scale."""
    return create_detector("tiny", device="cpu", heads_file="random")


# --- the rules (pure) -----------------------------------------------------------------------------------------


def test_max_margin_rule_adds_three_sigma_ten_percent_or_the_floor():
    spread = [1.0, 2.0, 3.0]
    assert apply_rule(spread, [], "distance", POLICY).threshold == pytest.approx(3.0 + 3 * np.std(spread))
    assert apply_rule([2.0, 2.0], [], "distance", POLICY).threshold == pytest.approx(2.2)  # 10 % of max
    # identical normal values: the absolute floor of the scale, never a zero margin
    assert apply_rule([1e-7, 1e-7], [], "distance", POLICY).threshold == pytest.approx(
        1e-7 + ABSOLUTE_FLOOR["distance"]
    )
    # logit scale: no relative term (the sign of a logit means nothing), the floor still applies
    assert apply_rule([-4.0], [], "logit", POLICY).threshold == pytest.approx(-4.0 + ABSOLUTE_FLOOR["logit"])


def test_floor_is_half_the_reshot_spread_of_the_views():
    result = apply_rule([0.0, 0.0], [0.2, 0.4], "distance", POLICY)
    assert result.floor == pytest.approx(0.2)  # 0.5 * (max(views) - min(u))
    assert result.threshold == pytest.approx(0.4 + 0.2)  # 3 * std(real) = 0 and 10 % of 0.4 are smaller
    assert result.method == "max-margin"
    # the spread comes from the real frames once there are two; a single one stays out of it: the views' spread
    assert apply_rule([0.1, 0.3], [0.0], "distance", POLICY).threshold == pytest.approx(0.3 + 3 * 0.1)
    single = apply_rule([0.3], [0.0, 0.1], "distance", POLICY).threshold
    assert single == pytest.approx(0.3 + max(3 * np.std([0.0, 0.1]), 0.5 * (0.1 - 0.0)))


def test_quantile_rule_once_enough_frames_flags_about_the_target_rate():
    rng = np.random.default_rng(0)
    real = rng.normal(0.3, 0.05, 200).tolist()
    result = apply_rule(real, [], "distance", POLICY)
    assert POLICY.quantile_min_frames == 20
    assert result.method == "quantile"
    flagged = np.mean(np.asarray(real) > result.threshold)
    assert 0.0 < flagged <= POLICY.target_false_alarm_rate
    assert result.threshold == pytest.approx(np.quantile(real, 0.95, method="higher"))
    assert apply_rule(real[:19], [], "distance", POLICY).method == "max-margin"


def test_saturated_probabilities_would_be_unreachable_but_logits_are_not():
    logits = [4.0, 6.0, 9.0]
    probabilities = [1 / (1 + math.exp(-y)) for y in logits]
    old_rule = max(probabilities) + max(3 * np.std(probabilities), 0.1 * max(probabilities))
    assert old_rule > 1.0  # the old rule on sigmoid(y): no frame could ever be flagged
    threshold = apply_rule(logits, [], "logit", POLICY).threshold
    assert math.isfinite(threshold) and threshold > max(logits)


def test_extra_frames_move_the_threshold_the_documented_way():
    base = derive("leave-one-out", ([0.1, 0.12], [1.0, 1.1]), ([0.15], [1.2]), ([], []), "distance", POLICY)
    assert base.provisional and base.n_calibration == 2 and base.n_views == 1
    high = recalibrate(base, ([0.5], [2.0]), POLICY)  # a good frame above the old threshold raises it
    assert high.threshold == pytest.approx(apply_rule([0.1, 0.12, 0.5], [0.15], "distance", POLICY).threshold)
    assert high.threshold > 0.5 > base.threshold
    many = recalibrate(base, (np.linspace(0.1, 0.2, 30).tolist(), [1.0] * 30), POLICY)
    assert many.threshold_method == "quantile" and not many.provisional and many.n_calibration == 32
    assert not any("provisional" in w for w in many.warnings)


@pytest.mark.parametrize(
    ("views", "frame"),
    [
        ([0.3, 0.45, 0.5, 0.62, 0.7, 0.4], 1.5),  # the field case: K = 1 (threshold ~1), one good label at 1.5
        ([0.001, 0.001, 0.002, 0.002, 0.0005, 0.001], 1.76),  # a bright reference and one dark "good" frame
    ],
)
def test_a_lone_frame_counts_in_the_maximum_not_in_the_spread(views, frame):
    """Counted in the spread too, a lone frame's distance from the views came back as margin (about once more):
    std over the views and the frame put the threshold at 2.6 to 3.6, above every distance (at most 2)."""
    old_rule = frame + 3 * np.std([*views, frame])
    assert old_rule > 2.6 > SCORE_RANGE["distance"][1]
    calibration = derive("augmented-views", (views, views), ([], []), ([frame], [frame]), "distance", POLICY)
    floor = max(0.5 * (max(views) - min(views)), ABSOLUTE_FLOOR["distance"])
    expected = frame + max(3 * np.std(views), 0.1 * frame, floor)
    assert calibration.threshold == pytest.approx(expected)
    assert calibration.threshold < SCORE_RANGE["distance"][1]
    assert unreachable_calibration(calibration) is None


def test_unusable_thresholds_on_each_scale():
    distance = Calibration("augmented-views", [0.2, 0.3], [0.2, 0.3], threshold=0.5, pixel_threshold=0.5)
    assert unusable_warnings(0.5, 0.5, distance) == []
    above, below, pixel = (
        unusable_warnings(3.51, 0.5, distance),
        unusable_warnings(0.1, 0.5, distance),
        unusable_warnings(0.5, 2.0, distance),
    )
    assert above and "3.51 is at or above 2, the highest distance value" in above[0]
    assert below and "0.1 is below every normal score (lowest 0.2)" in below[0]
    assert pixel and "pixel threshold 2 is at or above 2" in pixel[0]
    logit = replace(distance, score_scale="logit", normal_scores=[-4.0, -3.0])
    assert unusable_warnings(1e9, 1e9, logit) == []  # unbounded: any height is reachable
    assert "below every normal score" in unusable_warnings(-5.0, 0.0, logit)[0]


def test_a_large_change_is_a_ratio_of_distances_and_of_heights_above_the_median_logit():
    before = Calibration("leave-one-out", [0.3], [0.3], threshold=0.6, pixel_threshold=0.6)
    assert large_change(before, replace(before, threshold=0.89)) is None  # x1.48
    assert large_change(before, replace(before, threshold=0.91)).factor == pytest.approx(0.91 / 0.6)
    assert large_change(before, replace(before, threshold=0.39)).factor == pytest.approx(0.39 / 0.6)
    logits = replace(before, score_scale="logit", threshold=-2.0, normal_median=-4.0)
    assert large_change(logits, replace(logits, threshold=-1.2)) is None  # height 2 -> 2.8: x1.4
    assert large_change(logits, replace(logits, threshold=-0.5)).factor == pytest.approx(3.5 / 2.0)


def test_a_large_pixel_change_is_a_ratio_of_distances_on_every_scale():
    before = Calibration("leave-one-out", [0.3], [0.3], threshold=0.6, pixel_threshold=0.5, score_scale="logit")
    assert large_pixel_change(before, replace(before, pixel_threshold=0.74)) is None  # x1.48
    moved = large_pixel_change(before, replace(before, pixel_threshold=0.85, threshold=0.6))
    assert (moved.name, moved.threshold, moved.proposed) == ("pixel threshold", 0.5, 0.85)
    assert moved.factor == pytest.approx(0.85 / 0.5)
    assert large_pixel_change(before, replace(before, pixel_threshold=0.3)).factor == pytest.approx(0.3 / 0.5)
    assert large_change(before, replace(before, pixel_threshold=0.85)) is None  # the image threshold did not move


# --- with the tiny detector -----------------------------------------------------------------------------------


def test_leave_one_out_reuses_cached_tokens_without_a_backbone_pass(tiny_detector, monkeypatch):
    images = [pil(seed) for seed in range(3)]
    refs = tiny_detector.fit_references(images)
    expected = tiny_detector.predict([images[1]], tiny_detector.fit_references([images[0], images[2]]))[0]
    calls = []
    original = tiny_detector.network.extract_dino
    monkeypatch.setattr(tiny_detector.network, "extract_dino", lambda x: calls.append(x.shape[0]) or original(x))
    calibration, _ = calibrate(tiny_detector, images, refs, policy=POLICY)
    assert calibration.method == "leave-one-out" and calibration.score_scale == "distance"
    assert calibration.normal_scores[1] == pytest.approx(expected.score, rel=1e-4)
    assert calibration.normal_map_maxima[1] == pytest.approx(float(expected.anomaly_map.max()), rel=1e-3)
    assert sum(calls) == 6, "only the six jittered views pass the backbone, never a reference"
    assert calibration.n_calibration == 3 and calibration.n_views == 6
    assert calibration.threshold > max(calibration.normal_scores + calibration.view_scores)
    assert calibration.pixel_threshold > max(calibration.normal_map_maxima)


def test_single_reference_uses_augmented_views_and_is_provisional(tiny_detector):
    image = pil()
    calibration, _ = calibrate(tiny_detector, [image], tiny_detector.fit_references([image]), policy=POLICY)
    assert calibration.method == "augmented-views"
    assert len(calibration.normal_scores) == len(augmented_views(image))
    assert calibration.n_calibration == 0 and calibration.provisional
    assert any("provisional" in w for w in calibration.warnings)


def test_the_same_image_twice_gives_a_sane_threshold_and_a_reshot_passes(tiny_detector):
    image = pil()
    refs = tiny_detector.fit_references([image, image])
    calibration, _ = calibrate(tiny_detector, [image, image], refs, policy=POLICY)
    assert max(calibration.normal_scores) < 1e-4  # each copy is its own nearest neighbour
    assert any("near-duplicate" in w for w in calibration.warnings)
    assert calibration.threshold > max(calibration.view_scores) + calibration.margin_floor - 1e-9
    for seed in (3, 4, 5):
        score = tiny_detector.predict([reshot(image, seed)], refs)[0].decision_score
        assert score < calibration.threshold, f"a re-shot of the reference part is flagged ({score})"


def test_different_references_are_not_called_duplicates(tiny_detector):
    images = [pil(0), pil(1)]
    calibration, _ = calibrate(tiny_detector, images, tiny_detector.fit_references(images), policy=POLICY)
    assert not any("near-duplicate" in w for w in calibration.warnings)


def test_featureless_references_keep_a_margin_and_a_reshot_passes(tiny_detector):
    blank = Image.new("RGB", (56, 48), (128, 128, 128))
    refs = tiny_detector.fit_references([blank, blank])
    calibration, _ = calibrate(tiny_detector, [blank, blank], refs, policy=POLICY)
    assert calibration.threshold >= ABSOLUTE_FLOOR["distance"]
    for seed in (3, 4):
        assert tiny_detector.predict([reshot(blank, seed)], refs)[0].decision_score < calibration.threshold


def test_degenerate_calibration_warns_and_rests_on_the_floor():
    same = [0.25] * 4
    calibration = derive("leave-one-out", (same, same), (same, same), ([], []), "distance", POLICY)
    assert any("degenerate" in w for w in calibration.warnings)
    assert calibration.threshold == pytest.approx(0.25 + max(0.025, ABSOLUTE_FLOOR["distance"]))


def test_full_mode_calibrates_on_the_logit(full_detector):
    images = [pil(0), pil(1)]
    refs = full_detector.fit_references(images)
    calibration, frames = calibrate(full_detector, images, refs, [pil(2)], policy=POLICY)
    assert calibration.score_scale == "logit"
    prediction = full_detector.predict([pil(2)], refs)[0]
    assert prediction.logit is not None
    assert prediction.score == pytest.approx(1 / (1 + math.exp(-prediction.logit)), rel=1e-5)
    assert calibration.frame_scores == pytest.approx([prediction.logit], rel=1e-4)
    assert math.isfinite(calibration.threshold) and calibration.threshold > max(calibration.frame_scores)
    assert frames[0].decision_score == pytest.approx(prediction.logit, rel=1e-4)


def test_calibrations_stored_before_score_scales_warn():
    legacy = {"method": "leave-one-out", "normal_scores": [0.1], "normal_map_maxima": [0.2], "threshold": 0.9}
    calibration = Calibration.from_dict({**legacy, "pixel_threshold": 0.3})
    assert any("upload the references again" in w for w in calibration.warnings)
    current = Calibration.from_dict(calibration.to_dict())
    assert current.warnings == calibration.warnings  # said once, not once per load


def test_a_manual_threshold_is_neither_provisional_nor_warned_about(client):
    from tests.helpers.apps import upload
    from tests.helpers.images import image_bytes

    summary = upload(client, "widget", image_bytes(48, 40, seed=0), image_bytes(48, 40, seed=1)).json()
    assert summary["provisional"] and any(w.startswith("provisional threshold") for w in summary["warnings"])
    manual = client.put("/products/widget/threshold", json={"threshold": 0.5}).json()
    assert manual["threshold_method"] == "manual" and not manual["provisional"]
    assert not any(w.startswith("provisional threshold") for w in manual["warnings"])
