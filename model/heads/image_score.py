"""Image score: global (class-token reconstruction + CLIP zero-shot) fused with a learned top-p local score."""

from __future__ import annotations

import torch
from torch import nn

from model.heads.acl import CrossAttentionBlock


def top_fraction_mean(values: torch.Tensor, fraction: torch.Tensor | float, softness: float = 0.0) -> torch.Tensor:
    """Mean of the top `fraction` of each row of `values` (B, N) -> (B,).

    Hard (softness 0): the top int(fraction * N) values, at least 1, as AnomalyDINO's `mean_top1p`.
    softness > 0 gives a soft top-k (a sigmoid over ranks, `softness` ranks wide), differentiable in `fraction`.
    """
    b, n = values.shape
    ordered = values.sort(dim=1, descending=True).values  # (B, N)
    k = torch.as_tensor(fraction, dtype=values.dtype, device=values.device).expand(b) * n  # (B,)
    ranks = torch.arange(n, device=values.device, dtype=values.dtype)  # (N,)
    if softness > 0:
        weights = torch.sigmoid((k.clamp(min=1.0)[:, None] - ranks[None] - 0.5) / softness)  # (B, N)
    else:
        weights = (ranks[None] < k[:, None].floor().clamp(min=1.0)).to(values.dtype)  # (B, N)
    return (weights * ordered).sum(dim=1) / weights.sum(dim=1)


class ImageScoreHead(nn.Module):
    """y_hat = C([eta_rec, clip_score]) + mu * mean(top-p of s_hat), p = kappa(s_hat) in (0, p_max]."""

    def __init__(self, dino_width: int, heads: int, hidden: int, mu_local: float, p_max: float) -> None:
        super().__init__()
        self.mu_local = mu_local
        self.p_max = p_max
        self.cls_reconstruction = CrossAttentionBlock(dino_width, heads)
        self.adapter = nn.Sequential(nn.Linear(dino_width + 1, hidden), nn.GELU(), nn.Linear(hidden, 1))
        self.kappa = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1),
            nn.GELU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, 1),
        )

    def forward(
        self,
        g_cls: torch.Tensor,
        ref_cls: torch.Tensor,
        clip_score: torch.Tensor,
        s_hat: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """g_cls (B, Dd), ref_cls (B or 1, K, Dd), clip_score (B,), s_hat (B, hd, wd) -> y_global, y_local, p (B,)."""
        b = g_cls.shape[0]
        rebuilt = self.cls_reconstruction(g_cls[:, None], ref_cls.expand(b, -1, -1))[:, 0]  # (B, Dd)
        eta_rec = (g_cls - rebuilt).abs()  # (B, Dd)
        y_global = self.adapter(torch.cat([eta_rec, clip_score[:, None]], dim=1))[:, 0]  # (B,)
        p = self.p_max * torch.sigmoid(self.kappa(s_hat[:, None]))[:, 0]  # (B,) in (0, p_max)
        y_local = top_fraction_mean(s_hat.flatten(1), p, softness=1.0 if self.training else 0.0)  # (B,): hard top-k

        return y_global, y_local, p
