"""Training losses of DCP-SFR: image BCE, segmentation focal + Dice, and the Sobel edge-alignment Dice."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def image_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L_CE on image logits (B,) against labels (B,) in {0, 1}."""
    return F.binary_cross_entropy_with_logits(logits, labels.float())


def focal(seg_logits: torch.Tensor, masks: torch.Tensor, alpha: float = 0.9, gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss over pixels; alpha weights the (rare) anomalous pixels. (B, H, W) each."""
    return sigmoid_focal_loss(seg_logits, masks.float(), alpha=alpha, gamma=gamma, reduction="mean")


def dice(probs: torch.Tensor, masks: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - Dice per image, averaged: (B, H, W) probabilities and masks."""
    probs, masks = probs.flatten(1), masks.float().flatten(1)  # (B, HW)
    overlap = (probs * masks).sum(dim=1)
    return (1.0 - (2.0 * overlap + smooth) / (probs.sum(dim=1) + masks.sum(dim=1) + smooth)).mean()


def sobel_magnitude(maps: torch.Tensor) -> torch.Tensor:
    """O(.): Sobel gradient magnitude of (B, H, W) maps -> (B, H, W)."""
    kx = SOBEL_X.to(maps)
    kernels = torch.stack([kx, kx.T])[:, None]  # (2, 1, 3, 3)
    grads = F.conv2d(F.pad(maps[:, None], (1, 1, 1, 1), mode="replicate"), kernels)  # (B, 2, H, W)
    return torch.sqrt((grads**2).sum(dim=1) + 1e-12)  # (B, H, W)


def edge_dice(probs: torch.Tensor, masks: torch.Tensor, zeta: float = 1.0) -> torch.Tensor:
    """L_edge = 1 - (2 sum(O(p) O(s)) + zeta) / (sum(O(p)^2) + sum(O(s)^2) + zeta), per image, averaged."""
    pred_edges = sobel_magnitude(probs).flatten(1)  # (B, HW)
    true_edges = sobel_magnitude(masks.float()).flatten(1)  # (B, HW)
    numerator = 2.0 * (pred_edges * true_edges).sum(dim=1) + zeta
    denominator = (pred_edges**2).sum(dim=1) + (true_edges**2).sum(dim=1) + zeta
    return (1.0 - numerator / denominator).mean()
