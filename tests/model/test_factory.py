"""create_detector: configs by name with keyword overrides, weight files into the network (position embeddings
resampled to the configured size), devices."""

from __future__ import annotations

import timm
import torch

from model.factory import fit_pos_embed

TINY_VIT = {"embed_dim": 48, "depth": 1, "num_heads": 3, "num_classes": 0}


def test_reg4_dinov2_position_embeddings_resample_and_load():
    source = timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, img_size=518, **TINY_VIT)
    target = timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, img_size=224, **TINY_VIT)
    assert target.no_embed_class and source.pos_embed.shape[1] == 37 * 37  # patch positions only
    target.load_state_dict(fit_pos_embed(source.state_dict(), target), strict=True)
    assert target.pos_embed.shape[1] == 16 * 16


def test_plain_dinov2_keeps_its_class_position_when_resampled():
    source = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=518, **TINY_VIT)
    target = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=448, **TINY_VIT)
    state = fit_pos_embed(source.state_dict(), target)
    torch.testing.assert_close(state["pos_embed"][:, 0], source.pos_embed[:, 0])
    target.load_state_dict(state, strict=True)
