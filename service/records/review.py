"""The review queue's rule: which inspections wait for a person's verdict. Decided once, when the record is made,
from the score, the threshold in force and the product's review policy; the record keeps that decision (a policy
changed later applies to later inspections only)."""

from __future__ import annotations

from dataclasses import dataclass

from service.decisions.thresholds import ABSOLUTE_FLOOR

PENDING = "pending"  # the record's `review`: waits in the queue
REVIEWED = "reviewed"  # a person labelled it (the reviews table has who, when and what)


@dataclass(frozen=True)
class ReviewPolicy:
    """Which of a product's inspections go to the review queue."""

    band: float  # relative margin: scores within ±band × |threshold| of the threshold (0: only exactly on it)
    all_ng: bool  # every anomalous (NG) inspection too, wherever its score

    def needs_review(self, score: float, threshold: float, anomalous: bool, score_scale: str) -> bool:
        """Whether an inspection waits for a person: its score within the band around the threshold in force
        (edges included), or NG when `all_ng`. The band's half-width is band × |threshold|, at least band × the
        scale's calibration margin floor (ABSOLUTE_FLOOR: a logit threshold may sit near 0)."""
        if anomalous and self.all_ng:
            return True
        margin = self.band * max(abs(threshold), ABSOLUTE_FLOOR.get(score_scale, 0.0))
        return abs(score - threshold) <= margin


# the settings' defaults (DCPSFR_REVIEW_BAND, DCPSFR_REVIEW_ALL_NG). ±10 %: the scores a small recalibration (a few
# more good frames) could move across the threshold, a few percent of the parts on a calibrated line; every NG is not
# reviewed by default (the line rejects those parts anyway)
DEFAULT_REVIEW = ReviewPolicy(band=0.1, all_ng=False)
