"""Small typed records: what the detector's three stages hand each other (prepare -> forward -> maps) and return."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from model.notices import Notice

Mode = Literal["full", "training-free"]
Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels (x1, y1 exclusive)


def summed_timings(parts: Sequence[PreparedBatch | GridScores]) -> dict[str, float]:
    """Each stage's milliseconds summed over `parts`."""
    timings: dict[str, float] = {}
    for part in parts:
        for stage, ms in part.timings_ms.items():
            timings[stage] = timings.get(stage, 0.0) + ms
    return timings


@dataclass(frozen=True)
class PreparedFrame:
    """One frame ready for the backbones: the output of `Detector.prepare`, on the CPU."""

    dino: torch.Tensor  # (T, Hd, Wd, 3) uint8: T = 1, or the frame's tiles in tiled mode
    grid: tuple[int, int]  # (hd, wd): the DINOv2 patch grid of each of the T inputs
    camera_size: tuple[int, int]  # (W, H): the anomaly map's size
    pixel_size: tuple[int, int]  # (W, H) of the decoded pixels: tile boxes are in these coordinates
    clip: torch.Tensor | None = None  # (h, w, 3) uint8: the frame letterboxed for CLIP (full mode)
    tiles: tuple[Box, ...] | None = None  # tiled mode: each input's box in the pixels
    notices: tuple[Notice, ...] = ()  # warnings about this frame (another aspect, data above the bit depth)


@dataclass(frozen=True)
class PreparedBatch:
    """Prepared frames of one product version (any number; `Detector.forward` groups them by input size)."""

    frames: tuple[PreparedFrame, ...]
    timings_ms: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frames)

    @classmethod
    def merged(cls, batches: Sequence[PreparedBatch]) -> PreparedBatch:
        """One batch of all the frames of `batches`, in order (their timings summed)."""
        return cls(tuple(f for batch in batches for f in batch.frames), summed_timings(batches))

    def sliced(self, start: int, stop: int) -> PreparedBatch:
        """The frames start..stop-1, with the whole batch's timings."""
        return PreparedBatch(self.frames[start:stop], self.timings_ms)


@dataclass(frozen=True)
class GridScores:
    """The forward pass of a batch: per-frame maps on the patch grid and raw image scores (`Detector.forward`)."""

    grid_maps: tuple[torch.Tensor, ...]  # per frame (T, hd, wd) float32 on the detector's device
    raw_scores: torch.Tensor  # (B,) float32 on the CPU: distance (training-free) or the image logit (full)
    mode: Mode
    timings_ms: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.grid_maps)

    @classmethod
    def merged(cls, parts: Sequence[GridScores]) -> GridScores:
        """One GridScores of all `parts`' frames, in order (their timings summed)."""
        maps = tuple(m for part in parts for m in part.grid_maps)
        return cls(maps, torch.cat([part.raw_scores for part in parts]), parts[0].mode, summed_timings(parts))

    def sliced(self, start: int, stop: int) -> GridScores:
        """The frames start..stop-1, with the whole batch's timings."""
        return GridScores(self.grid_maps[start:stop], self.raw_scores[start:stop], self.mode, self.timings_ms)


@dataclass(frozen=True)
class Prediction:
    """One image's result. `anomaly_map` has the frame's own camera H x W."""

    score: float  # higher = more anomalous
    anomaly_map: np.ndarray  # (H, W) float32
    mode: Mode  # "full" (trained heads) or "training-free" (memory bank only)
    random_weights: bool = False  # True only for the tiny config or random_init timing runs
    timings_ms: dict[str, float] = field(default_factory=dict)  # per stage, for the whole batch
    logit: float | None = None  # "full" mode: the image logit y (score = sigmoid(logit)); None otherwise
    notices: tuple[Notice, ...] = ()  # about the frame: another aspect than the references', data above the bit depth

    @property
    def decision_score(self) -> float:
        """The value compared with an image threshold: the logit in full mode (unbounded, so a threshold above
        every normal logit is reachable; sigmoid(y) saturates), else the distance score."""
        return float(self.logit if self.logit is not None else self.score)

    @property
    def warnings(self) -> tuple[str, ...]:
        """The notices' messages: what the line should know about this frame (empty when nothing)."""
        return tuple(notice.message for notice in self.notices)

    @property
    def map_max(self) -> float:
        """The anomaly map's maximum (what a pixel threshold is calibrated on)."""
        return float(self.anomaly_map.max())
