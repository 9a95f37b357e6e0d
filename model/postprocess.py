"""Grid maps -> frame maps, as AnomalyDINO's `dists2map`: bilinear over the whole frame, then a Gaussian.

The Gaussian has `gaussian_sigma` px at the frame's own resolution (scipy.ndimage.gaussian_filter's kernel and
'reflect' borders). Frames longer than `smoothing_max_side` are smoothed at that size (sigma scaled alike) and
upsampled after, which bounds the blur's memory; the map is still the frame's H x W.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from model.config import InferenceConfig
from model.extras.tiling import stitch
from model.records import Box


def work_size(width: int, height: int, inference: InferenceConfig) -> tuple[tuple[int, int], float]:
    """((h, w), scale): the size a W x H frame's map is smoothed at, and its scale to the frame (<= 1)."""
    scale = min(1.0, inference.smoothing_max_side / max(width, height))
    return (max(1, round(height * scale)), max(1, round(width * scale))), scale


def frame_map(grid_map: torch.Tensor, size: tuple[int, int], inference: InferenceConfig) -> np.ndarray:
    """One (hd, wd) grid map -> the W x H frame's (H, W) float32 map (see the module docstring)."""
    width, height = size
    work, scale = work_size(width, height, inference)
    upsampled = F.interpolate(grid_map.float()[None, None], size=work, mode="bilinear", align_corners=False)[0, 0]
    return smoothed(upsampled, size, scale, inference)  # (H, W)


def tiled_frame_map(
    tile_maps: torch.Tensor,
    boxes: tuple[Box, ...],
    pixel_size: tuple[int, int],
    size: tuple[int, int],
    inference: InferenceConfig,
) -> np.ndarray:
    """Tile grid maps (T, hd, wd) -> the frame's (H, W) map: each tile over its box (pixel coordinates of a
    `pixel_size` image), overlaps averaged, then smoothed as `frame_map`."""
    width, height = size
    work, scale = work_size(width, height, inference)
    stitched = stitch(tile_maps.float(), list(boxes), work, work[0] / pixel_size[1])  # (h, w)
    return smoothed(stitched, size, scale, inference)


def smoothed(work_map: torch.Tensor, size: tuple[int, int], scale: float, inference: InferenceConfig) -> np.ndarray:
    """A (h, w) map at `scale` x the frame -> Gaussian there -> the frame's (H, W) float32 numpy array."""
    width, height = size
    smooth = gaussian_smooth(work_map[None], inference.gaussian_sigma * scale)  # (1, h, w)
    if tuple(smooth.shape[-2:]) != (height, width):
        smooth = F.interpolate(smooth[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    return smooth[0].cpu().numpy().astype("float32", copy=False)  # (H, W)


def gaussian_kernel_1d(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """scipy.ndimage.gaussian_filter's kernel: radius int(truncate * sigma + 0.5), normalised."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_smooth(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Isotropic Gaussian of (B, H, W) maps, sigma in pixels, borders as scipy's mode='reflect' (d c b a | a b c d).

    This is AnomalyDINO's `scipy.ndimage.gaussian_filter(map, sigma=4)`, separable, on the maps' device.
    """
    if sigma <= 0:
        return maps
    kernel = gaussian_kernel_1d(sigma).to(maps.device)
    out = maps[:, None]  # (B, 1, H, W)
    for dim in (2, 3):
        out = _symmetric_pad(out, len(kernel) // 2, dim)
        weight = kernel.view(1, 1, -1, 1) if dim == 2 else kernel.view(1, 1, 1, -1)
        out = F.conv2d(out, weight)
    return out[:, 0]  # (B, H, W)


def _symmetric_pad(x: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    size = x.shape[dim]
    if radius == 0:
        return x
    reps = math.ceil(radius / size) * 2 + 1  # mirror tiles enough for tiny maps too
    tiles = [x.flip(dim) if (i - reps // 2) % 2 else x for i in range(reps)]
    full = torch.cat(tiles, dim=dim)
    start = (reps // 2) * size - radius
    return full.narrow(dim, start, size + 2 * radius)
