"""create_detector: configs by name with keyword overrides, weight files into the network (position embeddings
resampled to the configured size), devices."""

from __future__ import annotations

import pytest
import timm
import torch

from model import ConfigError, create_detector, load_config
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


def test_create_detector_takes_config_overrides_and_detector_options_by_keyword():
    detector = create_detector("tiny", device="cpu", inference={"tiles": 2}, device_cache_bytes=1234)
    assert detector.config.inference.tiles == 2 and detector.tiled
    assert detector.device_cache.budget_bytes == 1234


def test_a_config_object_with_overrides_builds_the_same_as_its_name():
    by_name = create_detector("tiny", device="cpu", seed=1)
    by_object = create_detector(load_config("tiny"), device="cpu", seed=1)
    assert by_name.config == by_object.config
    for a, b in zip(by_name.network.state_dict().values(), by_object.network.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_unknown_keywords_are_config_errors_naming_the_fields():
    with pytest.raises(ConfigError, match=r"unknown config field\(s\) heads_fil"):
        create_detector("tiny", device="cpu", heads_fil="random")
