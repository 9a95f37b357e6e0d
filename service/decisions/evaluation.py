"""How a product's threshold does on the frames operators labelled: i-AUROC, F1, false alarms and misses."""

from __future__ import annotations

from typing import Any

import numpy as np

from model import f1_at_threshold, image_metrics
from service.products.frames import LabelledFrame


def evaluate(
    product_id: str, frames: list[LabelledFrame], threshold: float, version: int, score_scale: str
) -> dict[str, Any]:
    """Operator-labelled (feedback) frames scored by the current references, at the current threshold."""
    samples = [f for f in frames if f.source == "feedback" and f.version == version and f.score is not None]
    scores = np.asarray([f.score for f in samples], dtype=np.float64)
    labels = np.asarray([f.label == "defect" for f in samples], dtype=bool)
    n_defect = int(labels.sum())
    n_good = len(samples) - n_defect
    flagged = scores > threshold
    both = n_good > 0 and n_defect > 0
    return {
        "product_id": product_id,
        "threshold": threshold,
        "score_scale": score_scale,
        "reference_version": version,
        "n_good": n_good,
        "n_defect": n_defect,
        "i_auroc": image_metrics(scores, labels)["i_auroc"] if both else None,
        "f1": f1_at_threshold(scores, labels, threshold) if n_defect > 0 else None,
        "false_alarms": int((flagged & ~labels).sum()),
        "misses": int((~flagged & labels).sum()),
        "n_stale": sum(1 for f in frames if f.source == "feedback" and f.version != version),
        "samples": [
            {"score": f.score, "label": f.label, "inspection_id": f.inspection_id, "time": f.time} for f in samples
        ],
    }
