"""Frozen backbones: CLIP (open_clip) multi-layer patch tokens, image embedding and text tower; DINOv2 (timm)."""

from __future__ import annotations

from dataclasses import dataclass

import open_clip
import timm
import torch
from open_clip.model import CLIP
from torch import nn

from model.config import ClipConfig, DinoConfig
from model.pos_embed import use_hub_resampling


def freeze(module: nn.Module) -> nn.Module:
    """Put `module` in eval mode and turn off gradients of all its parameters; returns the same module."""
    module.eval()
    for param in module.parameters():
        param.requires_grad_(False)
    return module


@dataclass
class ClipFeatures:
    """CLIP vision outputs of a batch: patch tokens of the selected layers and the projected image embedding."""

    layer_tokens: torch.Tensor  # (B, m, Nc, Dc) patch tokens of the selected layers, after ln_post
    image_embedding: torch.Tensor  # (B, Dt) projected class token


@dataclass
class DinoFeatures:
    """DINOv2 outputs of a batch: last-block patch tokens and class token, after the final norm."""

    patch_tokens: torch.Tensor  # (B, Nd, Dd) last block, after the final norm
    cls_token: torch.Tensor  # (B, Dd)


def clip_architecture(cfg: ClipConfig) -> dict:
    """open_clip architecture dict with the configured input size."""
    arch = dict(cfg.arch) if cfg.arch is not None else open_clip.get_model_config(cfg.open_clip_model)
    if arch is None:
        raise ValueError(f"open_clip has no model config named {cfg.open_clip_model!r}")
    arch = {**arch, "vision_cfg": {**arch["vision_cfg"], "image_size": cfg.image_size}}
    return arch


class ClipBackbone(nn.Module):
    """Frozen open_clip CLIP: intermediate patch tokens, image embedding, prompt embeddings."""

    def __init__(self, cfg: ClipConfig) -> None:
        super().__init__()
        arch = clip_architecture(cfg)
        self.model: CLIP = CLIP(**arch)
        self.layer_indices = [layer - 1 for layer in cfg.layers]  # config layers are 1-based
        depth = arch["vision_cfg"]["layers"]
        if not all(0 <= i < depth for i in self.layer_indices):
            raise ValueError(f"CLIP layers {cfg.layers} out of range for a {depth}-block tower")
        patch = arch["vision_cfg"]["patch_size"]
        self.grid = (cfg.image_size // patch, cfg.image_size // patch)
        self.image_size = cfg.image_size
        self.context_length = arch["text_cfg"].get("context_length", 77)
        self.tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=self.context_length)
        freeze(self)

    def cells(self, content: tuple[int, int]) -> tuple[int, int]:
        """(rows, cols) of the CLIP grid covered by `content` (h, w) pixels at the top-left of its input."""
        patch = self.image_size // self.grid[0]
        return max(1, round(content[0] / patch)), max(1, round(content[1] / patch))

    @property
    def vision_width(self) -> int:
        """Dc, the width of the vision tower's tokens."""
        return self.model.visual.transformer.width

    @property
    def embed_dim(self) -> int:
        """Dt, the width of the joint image-text embedding (the text projection's output)."""
        return self.model.text_projection.shape[1]

    @property
    def text_width(self) -> int:
        """Dw, the width of the text tower's token embeddings (the prompt context's width)."""
        return self.model.token_embedding.embedding_dim

    def forward(self, images: torch.Tensor) -> ClipFeatures:  # images: (B, 3, Sc, Sc)
        """(B, 3, Sc, Sc) images -> patch tokens of the configured layers with ln_post applied (B, m, Nc, Dc) and the
        image embedding (B, Dt)."""
        out = self.model.visual.forward_intermediates(
            images, indices=self.layer_indices, normalize_intermediates=True, output_fmt="NLC"
        )
        layers = torch.stack(out["image_intermediates"], dim=1)  # (B, m, Nc, Dc)
        return ClipFeatures(layer_tokens=layers, image_embedding=out["image_features"])  # (B, Dt)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Token ids (P, L) of the texts, padded to the text tower's context length."""
        return self.tokenizer(texts)  # (P, L)

    def encode_prompts(self, token_ids: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Text embeddings of prompts whose tokens 1..n are replaced by learnable `context` (P, n, Dw) -> (P, Dt).

        Gradients flow into `context` through the frozen text tower (CoOp).
        """
        n = context.shape[1]
        tokens = self.model.token_embedding(token_ids)  # (P, L, Dw)
        x = torch.cat([tokens[:, :1], context.to(tokens.dtype), tokens[:, 1 + n :]], dim=1)  # (P, L, Dw)
        x = x + self.model.positional_embedding
        x = self.model.transformer(x, attn_mask=self.model.attn_mask)
        x = self.model.ln_final(x)  # (P, L, Dw)
        eot = x[torch.arange(x.shape[0], device=x.device), token_ids.argmax(dim=-1)]  # (P, Dw)
        return eot @ self.model.text_projection  # (P, Dt)


class DinoBackbone(nn.Module):
    """Frozen DINOv2 ViT from timm; takes any input size that is a multiple of the patch (dynamic_img_size).

    The position embeddings stay on the checkpoint's native grid (timm's default size for the model, 518 px for
    DINOv2, unless `timm_overrides` sets `img_size`) and are resampled once per input to its grid, as the torch-hub
    DINOv2 does (model.pos_embed).
    """

    def __init__(self, cfg: DinoConfig) -> None:
        super().__init__()
        self.model = timm.create_model(
            cfg.timm_model,
            pretrained=False,
            num_classes=0,
            dynamic_img_size=True,  # any H x W multiple of the patch
            **cfg.timm_overrides,
        )
        use_hub_resampling(self.model)
        self.patch_size = int(self.model.patch_embed.patch_size[0])
        self.grid = (cfg.image_size // self.patch_size, cfg.image_size // self.patch_size)  # a square frame's grid
        freeze(self)

    @property
    def width(self) -> int:
        """Dd, the width of the DINOv2 tokens."""
        return self.model.embed_dim

    def forward(self, images: torch.Tensor) -> DinoFeatures:  # images: (B, 3, Hd, Wd), multiples of the patch
        """(B, 3, Hd, Wd) images (multiples of the patch) -> patch tokens (B, Nd, Dd) and class token (B, Dd), final
        norm applied."""
        tokens = self.model.forward_features(images)  # (B, P + Nd, Dd), final norm applied
        prefix = self.model.num_prefix_tokens
        return DinoFeatures(patch_tokens=tokens[:, prefix:], cls_token=tokens[:, 0])  # (B, Nd, Dd), (B, Dd)
