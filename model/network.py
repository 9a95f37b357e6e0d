"""DCPSFR: the frozen backbones and the trainable heads as one nn.Module (no files, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from model.backbones import ClipBackbone, ClipFeatures, DinoBackbone, DinoFeatures
from model.config import DetectorConfig
from model.heads import DCPSFRHeads, HeadOutputs


@dataclass
class ReferenceFeatures:
    """DINOv2 tokens of the K references: patch tokens (R, K, Nd, Dd) and class tokens (R, K, Dd)."""

    patch_tokens: torch.Tensor  # (R, K, Nd, Dd): R = 1 (one product) or B (one set per query, training)
    cls_tokens: torch.Tensor  # (R, K, Dd)


class DCPSFR(nn.Module):
    """CLIP + DINOv2 (frozen) and, in full mode, the DCP-SFR heads. `clip` and `heads` are None training-free."""

    def __init__(self, cfg: DetectorConfig, with_heads: bool) -> None:
        super().__init__()
        self.cfg = cfg
        self.dino = DinoBackbone(cfg.dino)
        self.clip: ClipBackbone | None = None
        self.heads: DCPSFRHeads | None = None
        if with_heads:
            self.clip = ClipBackbone(cfg.clip)
            self.heads = DCPSFRHeads(
                cfg.heads,
                clip_layers=len(cfg.clip.layers),
                clip_width=self.clip.vision_width,
                embed_dim=self.clip.embed_dim,
                text_width=self.clip.text_width,
                dino_width=self.dino.width,
            )
            self.register_buffer(
                "prompt_token_ids", self.clip.tokenize(self.heads.prompts.templates()), persistent=False
            )

    @property
    def dino_grid(self) -> tuple[int, int]:
        """The DINOv2 patch grid (hd, wd) at the configured square input size."""
        return self.dino.grid

    def text_features(self) -> torch.Tensor:
        """f_normal, f_anomaly from the learnable prompts -> (2, Dt)."""
        assert self.clip is not None and self.heads is not None, "text features need CLIP and the heads"
        return self.clip.encode_prompts(self.prompt_token_ids, self.heads.prompts.context)

    def extract_dino(self, images: torch.Tensor) -> DinoFeatures:
        """DINOv2 features of (B, 3, Hd, Wd) images."""
        return self.dino(images)

    def extract_clip(self, images: torch.Tensor) -> ClipFeatures:
        """CLIP features of (B, 3, Sc, Sc) images; full mode only (asserts the CLIP tower exists)."""
        assert self.clip is not None
        return self.clip(images)

    def run_heads(
        self,
        clip: ClipFeatures,
        dino: DinoFeatures,
        refs: ReferenceFeatures,
        s_cos: torch.Tensor,
        text_features: torch.Tensor,
        dino_grid: tuple[int, int] | None = None,
        clip_content: tuple[int, int] | None = None,
    ) -> HeadOutputs:
        """Full-mode forward on extracted features; s_cos (B, Nd) comes from the memory bank.

        dino_grid: the product's (hd, wd) grid (default: the square grid at the configured size).
        clip_content: (h, w) pixels of the letterboxed frame inside CLIP's square input (default: all of it).
        """
        assert self.heads is not None and self.clip is not None
        return self.heads(
            clip.layer_tokens.float(),
            clip.image_embedding.float(),
            text_features.float(),
            dino.patch_tokens.float(),
            dino.cls_token.float(),
            refs.patch_tokens,
            refs.cls_tokens,
            s_cos,
            clip_grid=self.clip.grid,
            dino_grid=dino_grid or self.dino.grid,
            clip_region=self.clip.cells(clip_content) if clip_content else None,
        )
