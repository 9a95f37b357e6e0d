"""create_detector: configs by name with keyword overrides, weight files into the network (DINOv2 position
embeddings on the checkpoint's own grid), devices."""

from __future__ import annotations

import pytest
import timm
import torch

from model import ConfigError, create_detector, load_config
from model.factory import load_dino_state
from model.pos_embed import use_hub_resampling

TINY_VIT = {"embed_dim": 48, "depth": 1, "num_heads": 3, "num_classes": 0}


def test_reg4_dinov2_checkpoint_loads_on_its_own_grid():
    """Register variants embed no class/register positions: the checkpoint's 37 x 37 patch positions load as is
    into a model built for another size, and inputs of any grid run (resampled from 37 x 37 per input)."""
    source = timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, img_size=518, **TINY_VIT)
    target = timm.create_model(
        "vit_small_patch14_reg4_dinov2", pretrained=False, img_size=224, dynamic_img_size=True, **TINY_VIT
    )
    assert target.no_embed_class and source.pos_embed.shape[1] == 37 * 37  # patch positions only
    load_dino_state(use_hub_resampling(target), source.state_dict())
    torch.testing.assert_close(target.pos_embed, source.pos_embed)
    assert target.forward_features(torch.randn(1, 3, 224, 308)).shape == (1, 5 + 16 * 22, 48)


def test_plain_dinov2_checkpoint_keeps_its_class_position():
    source = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=518, **TINY_VIT)
    target = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=448, **TINY_VIT)
    load_dino_state(target, source.state_dict())
    torch.testing.assert_close(target.pos_embed, source.pos_embed)  # the class position and all 37 x 37 others


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
