"""Backbones: frozen, multi-layer CLIP tokens, DINOv2 grid, prompt embeddings; preprocessing; configs."""

from __future__ import annotations

import pytest
import torch

from model.backbones import ClipBackbone, DinoBackbone
from model.config import ConfigError, available_configs, load_config


@pytest.fixture(scope="module")
def tiny_cfg():
    return load_config("tiny")


def test_named_configs_load_and_match_the_paper():
    assert {"paper", "edge", "tiny"} <= set(available_configs())
    paper = load_config("paper")
    assert paper.clip.layers == (6, 12, 18, 24) and paper.clip.image_size == 336
    assert paper.dino.image_size == 448 and paper.heads.prompt_length == 12
    assert load_config("edge").clip.layers == (3, 6, 9, 12)


def test_unknown_config_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown config 'nope'"):
        load_config("nope")


def test_clip_backbone_features_and_freezing(tiny_cfg):
    clip = ClipBackbone(tiny_cfg.clip)
    out = clip(torch.randn(2, 3, 112, 112))
    m, nc = len(tiny_cfg.clip.layers), clip.grid[0] * clip.grid[1]
    assert out.layer_tokens.shape == (2, m, nc, clip.vision_width)
    assert out.image_embedding.shape == (2, clip.embed_dim)
    assert not any(p.requires_grad for p in clip.parameters()) and not clip.training


def test_prompt_embeddings_depend_on_context_and_carry_gradients(tiny_cfg):
    clip = ClipBackbone(tiny_cfg.clip)
    ids = clip.tokenize(["X X damaged.", "X X ."])
    context = torch.randn(2, 2, clip.text_width, generator=torch.Generator().manual_seed(0)).requires_grad_()
    emb = clip.encode_prompts(ids, context)
    assert emb.shape == (2, clip.embed_dim)
    emb.sum().backward()
    assert context.grad is not None and context.grad.abs().sum() > 0
    # A constant added to every channel is invisible to a pre-LayerNorm transformer, so perturb per channel.
    shift = torch.randn(context.shape, generator=torch.Generator().manual_seed(0))
    moved = clip.encode_prompts(ids, context.detach() + shift)
    assert (moved - emb.detach()).abs().max() > 1e-2 * emb.detach().abs().max()  # 0.08-0.7 for seeds 0-4


def test_dino_backbone_grid_at_configured_size(tiny_cfg):
    dino = DinoBackbone(tiny_cfg.dino)
    out = dino(torch.randn(3, 3, 224, 224))
    assert dino.grid == (16, 16)
    assert out.patch_tokens.shape == (3, 256, dino.width) and out.cls_token.shape == (3, dino.width)
    assert not any(p.requires_grad for p in dino.parameters())
