"""Procedural images for model tests: a textured part, and the same with a pasted foreign patch."""

from __future__ import annotations

import numpy as np
from PIL import Image


def textured_part(seed: int, size: int = 224) -> np.ndarray:
    """A striped, lightly noisy 'part' (H, W, 3) uint8; each seed a slightly different normal instance."""
    rng = np.random.default_rng(seed)
    _, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    phase = rng.uniform(0, 0.5)
    stripes = 0.5 + 0.35 * np.sin(2 * np.pi * (xx / 16.0 + phase))
    base = stripes[..., None] * np.array([0.8, 0.7, 0.6], dtype=np.float32)
    noisy = base + rng.normal(0, 0.02, size=base.shape)
    return (np.clip(noisy, 0, 1) * 255).astype(np.uint8)


def with_defect(image: np.ndarray, top: int, left: int, side: int, seed: int = 123) -> tuple[np.ndarray, np.ndarray]:
    """Paste a high-contrast checkerboard square; returns the image and its exact bool mask."""
    rng = np.random.default_rng(seed)
    out = image.copy()
    yy, xx = np.mgrid[0:side, 0:side]
    checker = (((yy // 4) + (xx // 4)) % 2).astype(np.float32)
    colour = rng.uniform(0.2, 1.0, size=3)
    out[top : top + side, left : left + side] = (checker[..., None] * colour * 255).astype(np.uint8)
    mask = np.zeros(image.shape[:2], dtype=bool)
    mask[top : top + side, left : left + side] = True
    return out, mask


def pil(array: np.ndarray) -> Image.Image:
    return Image.fromarray(array)
