"""ACL: anomaly-cue-guided localisation by reconstruction from normal reference tokens."""

from __future__ import annotations

import torch
from torch import nn


class CrossAttentionBlock(nn.Module):
    """Pre-norm cross-attention with a residual on the query, then an MLP. Queries never attend to each other."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 2) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * mlp_ratio), nn.GELU(), nn.Linear(dim * mlp_ratio, dim))

    def forward(self, query: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:  # (B, Nq, D), (B, Nk, D)
        """query (B, Nq, D), kv (B, Nk, D) -> (B, Nq, D): attention of the normed query over the normed kv, added to the
        query, then an MLP residual."""
        kv = self.norm_kv(kv)
        x = query + self.attn(self.norm_q(query), kv, kv, need_weights=False)[0]  # (B, Nq, D)
        return x + self.mlp(self.norm_mlp(x))  # (B, Nq, D)


class ACL(nn.Module):
    """f_rec^z = Block_z(f_rec^(z-1) * (1 - s_amp), g_bar'); delta_rec = mean_c |g_p - f_rec^(N_r)|."""

    def __init__(self, dim: int, heads: int, n_blocks: int, kv_mode: str = "mean") -> None:
        super().__init__()
        assert kv_mode in ("mean", "concat")
        self.kv_mode = kv_mode
        self.blocks = nn.ModuleList(CrossAttentionBlock(dim, heads) for _ in range(n_blocks))

    def reference_kv(self, ref_patch: torch.Tensor) -> torch.Tensor:
        """(R, K, Nd, Dd) reference tokens -> key/value (R, Nd, Dd) by position-wise mean, or (R, K*Nd, Dd)."""
        return ref_patch.mean(dim=1) if self.kv_mode == "mean" else ref_patch.flatten(1, 2)

    def forward(
        self, g_p: torch.Tensor, s_amp: torch.Tensor, ref_patch: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """g_p (B, Nd, Dd), s_amp (B, Nd) in [0, 1], ref_patch (B or 1, K, Nd, Dd) -> f_rec, delta_rec (B, Nd)."""
        kv = self.reference_kv(ref_patch).expand(g_p.shape[0], -1, -1)  # (B, Nkv, Dd)
        keep = (1.0 - s_amp).unsqueeze(-1)  # (B, Nd, 1): where the cue says anomaly, the query cannot copy itself
        f_rec = g_p
        for block in self.blocks:
            f_rec = block(f_rec * keep, kv)  # (B, Nd, Dd)
        delta_rec = (g_p - f_rec).abs().mean(dim=-1)  # (B, Nd)
        return f_rec, delta_rec
