"""Small typed results of the detector."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Mode = Literal["full", "training-free"]


@dataclass(frozen=True)
class Prediction:
    """One image's result. `anomaly_map` has the input image's own H x W."""

    score: float  # higher = more anomalous
    anomaly_map: np.ndarray  # (H, W) float32
    mode: Mode  # "full" (trained heads) or "training-free" (memory bank only)
    random_weights: bool = False  # True only for the tiny config or random_init timing runs
    timings_ms: dict[str, float] = field(default_factory=dict)  # per stage, for the whole batch
    logit: float | None = None  # "full" mode: the image logit y (score = sigmoid(logit)); None otherwise
