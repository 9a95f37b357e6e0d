"""DINOv2 position embeddings at any patch grid, resampled once from the checkpoint's native grid as the torch-hub
DINOv2 model does (facebookresearch/dinov2, `DinoVisionTransformer.interpolate_pos_encoding`).

The hub model keeps the checkpoint's square M x M grid (37 x 37 for 518 px) and resamples it per input straight to
the input's grid: bicubic, no antialias, with the scale factor (h + 0.1) / M, (w + 0.1) / M rather than the output
size (the sampling positions follow the scale factor), and no resampling at all for an M x M input. timm's own
dynamic resampling differs (antialiased, by output size), and resampling twice (checkpoint -> configured size ->
frame) differs again: AnomalyDINO's scores are only reproduced with the hub's single resampling.
"""

from __future__ import annotations

import math
import types

import torch
import torch.nn.functional as F
from torch import nn

HUB_INTERPOLATE_OFFSET = 0.1  # the hub's `interpolate_offset` for every released DINOv2


def resampled_pos_embed(
    pos_embed: torch.Tensor, grid: tuple[int, int], num_prefix: int, offset: float = HUB_INTERPOLATE_OFFSET
) -> torch.Tensor:
    """(1, P + M*M, D) position embeddings on a square M x M grid -> (1, P + h*w, D) for an h x w grid, the P prefix
    positions (class) unchanged; float32 arithmetic, returned in `pos_embed`'s dtype.
    Raises ValueError when the patch positions are not a square grid."""
    n = pos_embed.shape[1] - num_prefix
    m = math.isqrt(n)
    if m * m != n:
        raise ValueError(f"{n} patch positions are not a square grid")
    if tuple(grid) == (m, m):
        return pos_embed
    dim = pos_embed.shape[-1]
    prefix, patch = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:].float()  # (1, P, D), (1, M*M, D)
    patch = patch.reshape(1, m, m, dim).permute(0, 3, 1, 2)  # (1, D, M, M)
    scale = ((grid[0] + offset) / m, (grid[1] + offset) / m)
    patch = F.interpolate(patch, scale_factor=scale, mode="bicubic", antialias=False)  # (1, D, h, w)
    patch = patch.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], dim)  # (1, h*w, D)
    return torch.cat([prefix, patch.to(pos_embed.dtype)], dim=1)


def _hub_pos_embed(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """timm VisionTransformer._pos_embed with the hub's resampling: (B, h, w, D) patch embeddings -> (B, P + h*w, D)
    tokens with the class (and register) tokens in front and the position embeddings added."""
    b, h, w, d = x.shape
    embedded_prefix = 0 if self.no_embed_class else self.num_prefix_tokens
    grid = (int(h), int(w))  # plain ints: a traced export (one per input size) needs a constant scale factor
    pos = resampled_pos_embed(self.pos_embed, grid, embedded_prefix).to(x.dtype)  # (1, P' + h*w, D)
    x = x.reshape(b, h * w, d)  # (B, h*w, D)
    prefix = [token.expand(b, -1, -1) for token in (self.cls_token, self.reg_token) if token is not None]
    # register variants (no_embed_class) have the class position folded into the class token
    x = torch.cat([*prefix, x + pos], dim=1) if self.no_embed_class else torch.cat([*prefix, x], dim=1) + pos
    return self.pos_drop(x)


def use_hub_resampling(model: nn.Module) -> nn.Module:
    """Make a timm DINOv2 (created with dynamic_img_size=True) resample its position embeddings as the hub model
    does, in every forward path (forward_features, forward_intermediates). Returns the same model."""
    if not getattr(model, "dynamic_img_size", False) or model.pos_embed is None:
        raise ValueError("the hub's resampling needs a timm ViT with dynamic_img_size=True and position embeddings")
    model._pos_embed = types.MethodType(_hub_pos_embed, model)
    return model


def adopt_native_pos_embed(model: nn.Module, pos_embed: torch.Tensor) -> None:
    """Give `model` a position-embedding parameter of the checkpoint's shape, so the checkpoint's own grid is
    loaded as is and every input resamples from it once (no resampling at load)."""
    if model.pos_embed.shape != pos_embed.shape:
        model.pos_embed = nn.Parameter(torch.zeros_like(pos_embed), requires_grad=model.pos_embed.requires_grad)
