"""DINOv2 position embeddings: resampled once per input from the checkpoint's native grid with the torch-hub model's
formula (bicubic, no antialias, scale factor (g + 0.1) / M), checked against a plain reimplementation of that
formula here."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from model.backbones import DinoBackbone
from model.config import DinoConfig
from model.factory import load_dino_state
from model.pos_embed import resampled_pos_embed

TINY_VIT = {"embed_dim": 48, "depth": 1, "num_heads": 3}
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def cubic_weights(t: float, a: float = -0.75) -> list[float]:
    """Keys' cubic convolution weights of the 4 taps around a sample at fraction t (a = -0.75, as PyTorch)."""

    def near(x: float) -> float:  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: float) -> float:  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def hub_axis_matrix(m: int, g: int, offset: float = 0.1) -> np.ndarray:
    """(g, m) matrix resampling m positions to g: the hub's scale factor s = (g + offset) / m, source coordinate
    (i + 0.5) / s - 0.5 (half-pixel centres), 4 cubic taps with indices clamped at the borders."""
    s = (g + offset) / m
    out = np.zeros((g, m))
    for i in range(g):
        src = (i + 0.5) / s - 0.5
        x0 = int(np.floor(src))
        for k, weight in enumerate(cubic_weights(src - x0)):
            out[i, min(max(x0 - 1 + k, 0), m - 1)] += weight
    return out


def hub_formula(pos_embed: torch.Tensor, grid: tuple[int, int], num_prefix: int = 1) -> torch.Tensor:
    """The hub's interpolate_pos_encoding written out as two separable matrix products, in float64."""
    patch = pos_embed[0, num_prefix:].double().numpy()  # (M*M, D)
    m = round(patch.shape[0] ** 0.5)
    grid_patch = patch.reshape(m, m, -1)
    rows, cols = hub_axis_matrix(m, grid[0]), hub_axis_matrix(m, grid[1])
    out = np.einsum("im,jn,mnd->ijd", rows, cols, grid_patch).reshape(grid[0] * grid[1], -1)
    return torch.cat([pos_embed[0, :num_prefix].double(), torch.from_numpy(out)])[None].float()


@pytest.mark.parametrize("grid", [(4, 7), (3, 3), (9, 2), (6, 5)])
def test_resampling_follows_the_hub_formula(grid):
    pos_embed = torch.randn(1, 1 + 6 * 6, 8, generator=torch.Generator().manual_seed(0))  # native 6 x 6 grid
    got = resampled_pos_embed(pos_embed, grid, num_prefix=1)
    assert got.shape == (1, 1 + grid[0] * grid[1], 8)
    torch.testing.assert_close(got, hub_formula(pos_embed, grid), atol=1e-5, rtol=1e-5)


def test_hub_formula_differs_from_timm_resampling_by_output_size_with_antialias():
    """The test above can fail: resampling by output size (timm's dynamic_img_size way) gives other values."""
    pos_embed = torch.randn(1, 1 + 37 * 37, 4, generator=torch.Generator().manual_seed(1))
    hub = hub_formula(pos_embed, (32, 42))
    patch = pos_embed[:, 1:].reshape(1, 37, 37, 4).permute(0, 3, 1, 2)  # (1, D, 37, 37)
    timm_way = F.interpolate(patch, size=(32, 42), mode="bicubic", antialias=True).permute(0, 2, 3, 1).reshape(1, -1, 4)
    assert (timm_way - hub[:, 1:]).abs().max() > 1e-2
    torch.testing.assert_close(resampled_pos_embed(pos_embed, (32, 42), 1), hub, atol=1e-5, rtol=1e-5)


def test_native_grid_is_used_as_is_and_prefix_positions_are_kept():
    pos_embed = torch.randn(1, 1 + 5 * 5, 8)
    assert resampled_pos_embed(pos_embed, (5, 5), num_prefix=1) is pos_embed  # the hub adds no resampling here
    torch.testing.assert_close(resampled_pos_embed(pos_embed, (5, 8), num_prefix=1)[:, 0], pos_embed[:, 0])
    with pytest.raises(ValueError, match="not a square grid"):
        resampled_pos_embed(torch.randn(1, 1 + 12, 8), (3, 4), num_prefix=1)


def manual_forward(model: torch.nn.Module, images: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """DINOv2 patch tokens computed by hand: patch embedding, hub-formula positions from the native grid, blocks,
    final norm."""
    patches = model.patch_embed.proj(images).flatten(2).transpose(1, 2)  # (B, h*w, D)
    x = torch.cat([model.cls_token.expand(images.shape[0], -1, -1), patches], dim=1)
    x = x + hub_formula(model.pos_embed.detach(), grid)
    return model.norm(model.blocks(x))[:, 1:]


@pytest.mark.parametrize("size", [(28, 42), (70, 28), (448, 448)])
def test_backbone_resamples_once_from_the_checkpoint_grid(size):
    """A checkpoint at 518 px (37 x 37 positions) loaded into a backbone configured for 448 px keeps its 37 x 37
    grid; each input is resampled from there, straight to its own grid (a 448 x 448 input too)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        checkpoint = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, **TINY_VIT)
    assert checkpoint.pos_embed.shape[1] == 1 + 37 * 37
    dino = DinoBackbone(DinoConfig("vit_small_patch14_dinov2", 448, MEAN, STD, timm_overrides=TINY_VIT))
    load_dino_state(dino.model, checkpoint.state_dict())
    torch.testing.assert_close(dino.model.pos_embed, checkpoint.pos_embed)  # no resampling at load
    images = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(2))
    grid = (size[0] // 14, size[1] // 14)
    with torch.inference_mode():
        got = dino(images).patch_tokens  # (2, h*w, D)
        torch.testing.assert_close(got, manual_forward(dino.model, images, grid), atol=1e-4, rtol=1e-4)


def test_a_checkpoint_on_another_grid_is_adopted_not_resampled():
    """A checkpoint whose grid is not timm's default (here 16 x 16) is loaded as is: its grid becomes the native one."""
    source = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, img_size=224, **TINY_VIT)
    dino = DinoBackbone(DinoConfig("vit_small_patch14_dinov2", 448, MEAN, STD, timm_overrides=TINY_VIT))
    load_dino_state(dino.model, source.state_dict())
    torch.testing.assert_close(dino.model.pos_embed, source.pos_embed)
    with torch.inference_mode():
        out = dino(torch.randn(1, 3, 448, 448))
    assert out.patch_tokens.shape == (1, 32 * 32, 48)
