"""SSR: structural-aware segmentation refinement (fusion with the memory-bank map; calibration for the losses)."""

from __future__ import annotations

import torch
from torch import nn


def fuse_maps(delta_rec: torch.Tensor, s_cos: torch.Tensor, lambda_cos: float) -> torch.Tensor:
    """s_hat = delta_rec + lambda * s_cos, both (B, Nd)."""
    return delta_rec + lambda_cos * s_cos


class SegmentationCalibration(nn.Module):
    """seg_logit = a * s_hat + b (learnable scalars), so the losses see a probability map."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(4.0))
        self.shift = nn.Parameter(torch.tensor(-2.0))

    def forward(self, s_hat: torch.Tensor) -> torch.Tensor:
        """The segmentation logit a * s_hat + b, same shape as s_hat (the losses apply the sigmoid)."""
        return self.scale * s_hat + self.shift
