"""Frames -> backbone batches: PIL bicubic to the geometry, crop, normalise on the device; DINOv2 takes any
multiple of its patch."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from model.backbones import DinoBackbone
from model.config import load_config
from model.geometry import aspect_geometry
from model.preprocess import geometry_pixels, stacked, to_backbone_input


def test_backbone_batch_resizes_with_pil_bicubic_then_crops_bottom_right():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (90, 160, 3), dtype=np.uint8))
    geometry = aspect_geometry(90, 160, 28, 14)
    pixels = stacked([geometry_pixels(image, geometry)])  # (1, 28, 42, 3) uint8
    batch = to_backbone_input(pixels, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), torch.device("cpu"))
    assert batch.shape == (1, 3, 28, 42)
    expected = np.asarray(image.resize((49, 28), Image.Resampling.BICUBIC))[:28, :42] / 255.0
    np.testing.assert_allclose(batch[0].permute(1, 2, 0).numpy(), expected, atol=1e-6)


def test_dino_takes_any_multiple_of_the_patch():
    dino = DinoBackbone(load_config("tiny").dino)
    out = dino(torch.randn(1, 3, 224, 364))
    assert out.patch_tokens.shape == (1, 16 * 26, dino.width)
