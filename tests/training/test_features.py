"""The training feature cache: its key changes with everything the cached features depend on."""

from __future__ import annotations

import dataclasses

from model import create_detector
from model.training.features import features_id


def test_feature_cache_key_includes_clip_config_and_weights():
    detector = create_detector("tiny", device="cpu", heads_file="random")
    before = features_id(detector)
    detector.network.clip.model.visual.conv1.weight.data.add_(1.0)  # other CLIP weights, same config
    after_weights = features_id(detector)
    detector.network.cfg = dataclasses.replace(
        detector.network.cfg, clip=dataclasses.replace(detector.network.cfg.clip, layers=(1, 2, 3, 3))
    )
    assert len({before, after_weights, features_id(detector)}) == 3
