"""The backbone geometry of a frame: AnomalyDINO's resize-and-crop, its aspect kept and capped."""

from __future__ import annotations

import numpy as np
from PIL import Image

from model.geometry import Geometry, aspect_geometry, same_aspect


def test_geometry_keeps_the_aspect_like_anomalydino():
    wide = aspect_geometry(1080, 1920, 448, 14)  # shorter side 448, longer int(448 * 1920 / 1080) = 796
    assert wide.resized == (448, 796) and wide.input == (448, 784) and wide.grid == (32, 56)
    tall = aspect_geometry(1000, 750, 448, 14)
    assert tall.resized == (597, 448) and tall.grid == (42, 32)
    assert aspect_geometry(900, 900, 448, 14).grid == (32, 32)


def test_an_extreme_aspect_is_capped_so_the_patch_grid_stays_bounded(tiny_detector):
    """A 2 x 2000 px reference gave a 16 x 16000 patch grid (256k tokens) that kept the model busy for minutes."""
    assert aspect_geometry(2000, 2, 224, 14) == Geometry(resized=(1792, 224), input=(1792, 224), grid=(128, 16))
    assert aspect_geometry(2, 2000, 224, 14).grid == (16, 128)
    assert aspect_geometry(100, 800, 224, 14).resized == (224, 1792)  # exactly 8:1: AnomalyDINO's own geometry
    strip = Image.fromarray(np.full((2000, 2, 3), 128, dtype=np.uint8))  # (H, W, 3)
    refs = tiny_detector.fit_references([strip])
    short = tiny_detector.config.dino.image_size // tiny_detector.patch_size
    assert tuple(refs.geometry.grid) == (8 * short, short)
    assert tiny_detector.predict([strip], refs)[0].anomaly_map.shape == (2000, 2)


def test_same_aspect_allows_a_few_pixels_of_crop_either_way():
    assert same_aspect((900, 900), (900, 894)) and same_aspect((900, 894), (900, 900))  # 0.7 %
    assert same_aspect((1920, 1080), (960, 540))  # the same aspect at another size (binning 2 x 2)
    assert not same_aspect((900, 900), (900, 880)) and not same_aspect((900, 880), (900, 900))  # 2.3 %
    assert not same_aspect((2448, 2048), (2448, 1024))  # binning 1 x 2
