"""CACA: conditional anomaly cue amplification (learnable prompts x multi-layer CLIP tokens, then amplify)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PromptLearner(nn.Module):
    """CoOp context vectors: p_normal = [U_1..U_n], p_anomaly = [T_1..T_n][word]."""

    def __init__(self, length: int, text_width: int, anomaly_word: str = "damaged") -> None:
        super().__init__()
        self.length = length
        self.anomaly_word = anomaly_word
        self.context = nn.Parameter(torch.randn(2, length, text_width) * 0.02)  # (2, n, Dw): normal, anomaly

    def templates(self) -> list[str]:
        """Prompt texts whose first n words are placeholders for the learnable context."""
        placeholders = " ".join(["X"] * self.length)
        return [f"{placeholders} .", f"{placeholders} {self.anomaly_word}."]


class Amplifier(nn.Module):
    """A: s_init grid -> one logit per cell. A steep monotone ramp plus a small conv net for local context."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(10.0))
        self.center = nn.Parameter(torch.tensor(0.5))
        self.net = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(channels, 1, 1),
        )
        nn.init.zeros_(self.net[-1].weight)  # starts as the pure ramp: monotone from step one
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, s_init: torch.Tensor) -> torch.Tensor:  # (B, 1, hc, wc)
        """s_init (B, 1, hc, wc) -> logits (B, 1, hc, wc): gain * (s_init - center) plus the conv net's correction."""
        return self.gain * (s_init - self.center) + self.net(s_init)  # (B, 1, hc, wc)


class CACA(nn.Module):
    """s_init = mean_j softmax(<W_j f_pj, f_c> / tau)[anomaly]; s_amp = sigmoid(A(s_init))."""

    def __init__(
        self, n_layers: int, clip_width: int, embed_dim: int, temperature: float, amplifier_channels: int
    ) -> None:
        super().__init__()
        self.temperature = temperature
        self.layer_maps = nn.ModuleList(nn.Linear(clip_width, embed_dim, bias=False) for _ in range(n_layers))
        self.amplifier = Amplifier(amplifier_channels)

    def forward(
        self, layer_tokens: torch.Tensor, text_features: torch.Tensor, grid: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """layer_tokens (B, m, Nc, Dc), text_features (2, Dt) -> s_init (B, Nc), s_amp (B, hc, wc)."""
        b, m, nc, _ = layer_tokens.shape
        assert m == len(self.layer_maps) and nc == grid[0] * grid[1]
        text = F.normalize(text_features, dim=-1)  # (2, Dt)
        probs = []
        for j, layer_map in enumerate(self.layer_maps):
            tokens = F.normalize(layer_map(layer_tokens[:, j]), dim=-1)  # (B, Nc, Dt)
            logits = tokens @ text.T / self.temperature  # (B, Nc, 2)
            probs.append(logits.softmax(dim=-1)[..., 1])  # (B, Nc)
        s_init = torch.stack(probs).mean(dim=0)  # (B, Nc)
        s_amp = torch.sigmoid(self.amplifier(s_init.view(b, 1, *grid)))[:, 0]  # (B, hc, wc)
        return s_init, s_amp
