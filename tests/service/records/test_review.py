"""Which inspections wait for review: the band around the threshold in force (edges included, on either side), every
NG when asked, the logit scale's floor under a threshold near 0."""

from __future__ import annotations

import pytest

from service.records.review import DEFAULT_REVIEW, ReviewPolicy
from service.settings import Settings

# powers of two: the band's edges are exact in binary floating point
QUARTER = ReviewPolicy(band=0.25, all_ng=False)


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        (0.5, True),  # on the threshold
        (0.375, True),  # exactly on the lower edge: 0.5 - 0.25 × 0.5
        (0.625, True),  # exactly on the upper edge
        (0.375 - 1e-9, False),  # just outside
        (0.625 + 1e-9, False),
        (0.1, False),
        (1.9, False),
    ],
)
def test_scores_within_the_band_edges_included_are_reviewed(score, expected):
    assert QUARTER.needs_review(score, 0.5, anomalous=score > 0.5, score_scale="distance") is expected


def test_an_ng_outside_the_band_is_reviewed_only_with_all_ng():
    far_ng = {"score": 1.5, "threshold": 0.5, "anomalous": True, "score_scale": "distance"}
    assert QUARTER.needs_review(**far_ng) is False
    assert ReviewPolicy(band=0.25, all_ng=True).needs_review(**far_ng) is True
    # all_ng never sends an OK far below the threshold, and an NG by a rule (score below the threshold) counts as NG
    assert ReviewPolicy(band=0.25, all_ng=True).needs_review(0.1, 0.5, False, "distance") is False
    assert ReviewPolicy(band=0.0, all_ng=True).needs_review(0.1, 0.5, True, "distance") is True


def test_the_band_follows_the_threshold_in_force_a_manual_one_too():
    # the same score: outside the band of the calibrated 0.5, inside the band of a manual 0.25
    assert QUARTER.needs_review(0.3, 0.5, False, "distance") is False
    assert QUARTER.needs_review(0.3, 0.25, True, "distance") is True
    assert QUARTER.needs_review(0.3125, 0.25, True, "distance") is True  # the manual threshold's upper edge
    assert QUARTER.needs_review(0.3125 + 1e-9, 0.25, True, "distance") is False


def test_a_band_of_zero_reviews_only_a_score_on_the_threshold():
    policy = ReviewPolicy(band=0.0, all_ng=False)
    assert policy.needs_review(0.5, 0.5, False, "distance") is True
    assert policy.needs_review(0.5 + 1e-12, 0.5, True, "distance") is False


def test_a_logit_threshold_near_zero_keeps_a_band():
    # |threshold| = 0 would make the band empty: the logit scale's margin floor (0.5) stands in for it
    assert QUARTER.needs_review(0.125, 0.0, True, "logit") is True  # 0.25 × 0.5
    assert QUARTER.needs_review(-0.125, 0.0, False, "logit") is True
    assert QUARTER.needs_review(0.13, 0.0, True, "logit") is False
    assert QUARTER.needs_review(-4.5, -4.0, False, "logit") is True  # a negative threshold: ±0.25 × 4
    assert QUARTER.needs_review(-5.01, -4.0, False, "logit") is False


def test_the_default_is_a_ten_percent_band_without_every_ng():
    assert ReviewPolicy(band=0.1, all_ng=False) == DEFAULT_REVIEW
    assert DEFAULT_REVIEW.needs_review(0.54, 0.5, True, "distance") is True
    assert DEFAULT_REVIEW.needs_review(0.9, 0.5, True, "distance") is False


def test_the_settings_defaults_are_that_policy():
    fields = Settings.model_fields
    assert ReviewPolicy(fields["review_band"].default, fields["review_all_ng"].default) == DEFAULT_REVIEW
