"""Pictures for people: colour heat maps and side-by-side panels (image | ground truth | anomaly map)."""

from __future__ import annotations

import numpy as np
from PIL import Image

# a perceptually ordered ramp (dark blue -> cyan -> yellow -> red), interpolated linearly
_STOPS = np.array([[0, 0, 80], [0, 90, 200], [0, 200, 200], [240, 230, 40], [230, 40, 20]], dtype=np.float32)


def heat_colours(values: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """(H, W) floats -> (H, W, 3) uint8, vmin dark blue, vmax red."""
    t = np.clip((values - vmin) / max(vmax - vmin, 1e-12), 0.0, 1.0) * (len(_STOPS) - 1)  # (H, W)
    low = np.floor(t).astype(int).clip(max=len(_STOPS) - 2)
    frac = (t - low)[..., None]
    return (_STOPS[low] * (1 - frac) + _STOPS[low + 1] * frac).astype(np.uint8)


def side_by_side(
    image: Image.Image, mask: np.ndarray, anomaly_map: np.ndarray, vmin: float, vmax: float
) -> Image.Image:
    """Three panels of the mask's size: the image, the ground truth (white = defect), the coloured map."""
    h, w = mask.shape
    panels = [
        np.asarray(image.convert("RGB").resize((w, h), Image.BILINEAR)),
        np.repeat((mask.astype(np.uint8) * 255)[..., None], 3, axis=2),
        heat_colours(anomaly_map, vmin, vmax),
    ]
    gap = np.full((h, 4, 3), 255, dtype=np.uint8)
    return Image.fromarray(np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1))
