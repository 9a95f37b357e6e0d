"""Model loose ends: reg4 position embeddings, cache and reference keys, hard top-k at inference, synthetic seeds."""

from __future__ import annotations

import dataclasses

import numpy as np
import timm
import torch

from model.config import load_config
from model.detector import create_detector, feature_fingerprint, fit_pos_embed
from model.feature_cache import features_id
from model.heads import ImageScoreHead, top_fraction_mean
from model.train import synthetic_rng

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


def test_reference_fingerprint_includes_precision_and_device_type():
    cfg = load_config("tiny")
    cpu = feature_fingerprint(cfg, True, torch.device("cpu"))
    assert cpu == feature_fingerprint(cfg, True, torch.device("cpu"))
    assert cpu != feature_fingerprint(cfg, True, torch.device("cuda"))  # bf16 there: refit, never reuse


def test_feature_cache_key_includes_clip_config_and_weights():
    detector = create_detector("tiny", device="cpu", heads="random")
    before = features_id(detector)
    detector.network.clip.model.visual.conv1.weight.data.add_(1.0)  # other CLIP weights, same config
    after_weights = features_id(detector)
    detector.network.cfg = dataclasses.replace(
        detector.network.cfg, clip=dataclasses.replace(detector.network.cfg.clip, layers=(1, 2, 3, 3))
    )
    assert len({before, after_weights, features_id(detector)}) == 3


def test_local_score_soft_top_k_is_hard_at_inference():
    torch.manual_seed(0)
    head = ImageScoreHead(dino_width=8, heads=2, hidden=4, mu_local=2.0, p_max=0.1)
    s_hat = torch.rand(2, 10, 10)
    args = (torch.randn(2, 8), torch.randn(1, 3, 8), torch.rand(2), s_hat)
    head.eval()
    _, y_local, p = head(*args)
    torch.testing.assert_close(
        y_local, torch.stack([top_fraction_mean(s_hat[i].flatten()[None], p[i])[0] for i in range(2)])
    )
    head.train()
    _, y_soft, _ = head(*args)
    assert not torch.allclose(y_soft, y_local)


def test_synthetic_anomaly_seeds_differ_per_category():
    draws = {c: synthetic_rng(0, c, 3, 1).random() for c in ("bottle", "carpet", "screw")}  # same name lengths
    assert len(set(draws.values())) == 3
    assert synthetic_rng(0, "bottle", 3, 1).random() == draws["bottle"]  # and stay reproducible
    assert np.isfinite(list(draws.values())).all()
