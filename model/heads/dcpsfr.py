"""All DCP-SFR heads together: CACA -> ACL -> SSR fusion -> image score. Product-agnostic, trained once."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from model.config import HeadsConfig
from model.heads.acl import ACL
from model.heads.caca import CACA, PromptLearner
from model.heads.image_score import ImageScoreHead
from model.heads.ssr import SegmentationCalibration, fuse_maps


@dataclass
class HeadOutputs:
    """Every intermediate and output of one heads forward (maps on the DINOv2 grid, image logits)."""

    s_init: torch.Tensor  # (B, Nc) CLIP-grid anomaly cue
    s_amp: torch.Tensor  # (B, hd, wd) amplified cue on the DINOv2 grid
    delta_rec: torch.Tensor  # (B, hd, wd) reconstruction residual
    s_hat: torch.Tensor  # (B, hd, wd) fused map: delta_rec + lambda * s_cos
    y_global: torch.Tensor  # (B,)
    y_local: torch.Tensor  # (B,)
    y_hat: torch.Tensor  # (B,) image logit: y_global + mu * y_local
    top_p: torch.Tensor  # (B,) the local score's sampled fraction


class DCPSFRHeads(nn.Module):
    """The trainable DCP-SFR heads (SPEC.md): prompts, CACA, ACL,
    the SSR calibration and the global-local image score."""

    def __init__(
        self,
        cfg: HeadsConfig,
        *,
        clip_layers: int,
        clip_width: int,
        embed_dim: int,
        text_width: int,
        dino_width: int,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.prompts = PromptLearner(cfg.prompt_length, text_width, cfg.anomaly_word)
        self.caca = CACA(clip_layers, clip_width, embed_dim, cfg.temperature, cfg.amplifier_channels)
        self.acl = ACL(dino_width, cfg.acl_heads, cfg.acl_blocks, cfg.acl_kv)
        self.seg_calibration = SegmentationCalibration()
        self.image_score = ImageScoreHead(dino_width, cfg.acl_heads, cfg.adapter_hidden, cfg.mu_local, cfg.p_max)

    def forward(
        self,
        clip_layers: torch.Tensor,
        clip_embedding: torch.Tensor,
        text_features: torch.Tensor,
        g_p: torch.Tensor,
        g_cls: torch.Tensor,
        ref_patch: torch.Tensor,
        ref_cls: torch.Tensor,
        s_cos: torch.Tensor,
        clip_grid: tuple[int, int],
        dino_grid: tuple[int, int],
        clip_region: tuple[int, int] | None = None,
    ) -> HeadOutputs:
        """clip_layers (B, m, Nc, Dc), clip_embedding (B, Dt), text_features (2, Dt), g_p (B, Nd, Dd),
        g_cls (B, Dd), ref_patch (B or 1, K, Nd, Dd), ref_cls (B or 1, K, Dd), s_cos (B, Nd).
        clip_region: (rows, cols) of the CLIP grid the frame covers (letterboxed input); the cue map is cropped
        to it before it is resized to the DINOv2 grid, so both grids cover the same frame, undistorted."""
        b = g_p.shape[0]
        s_init, s_amp_clip = self.caca(clip_layers, text_features, clip_grid)  # (B, Nc), (B, hc, wc)
        if clip_region is not None:
            s_amp_clip = s_amp_clip[:, : clip_region[0], : clip_region[1]]  # (B, rows, cols): the frame's cells
        s_amp = F.interpolate(s_amp_clip[:, None], size=dino_grid, mode="bilinear", align_corners=False)
        s_amp = s_amp[:, 0]  # (B, hd, wd)
        _, delta_rec = self.acl(g_p, s_amp.flatten(1), ref_patch)  # (B, Nd)
        s_hat = fuse_maps(delta_rec, s_cos, self.cfg.lambda_cos).view(b, *dino_grid)  # (B, hd, wd)
        clip_score = self.clip_zero_shot(clip_embedding, text_features)  # (B,)
        y_global, y_local, top_p = self.image_score(g_cls, ref_cls, clip_score, s_hat)
        return HeadOutputs(
            s_init=s_init,
            s_amp=s_amp,
            delta_rec=delta_rec.view(b, *dino_grid),
            s_hat=s_hat,
            y_global=y_global,
            y_local=y_local,
            y_hat=y_global + self.cfg.mu_local * y_local,
            top_p=top_p,
        )

    def clip_zero_shot(self, embedding: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """softmax(<image, f_c> / tau)[anomaly]: (B, Dt), (2, Dt) -> (B,)."""
        logits = F.normalize(embedding, dim=-1) @ F.normalize(text_features, dim=-1).T  # (B, 2)
        return (logits / self.cfg.temperature).softmax(dim=-1)[:, 1]
