"""Tiled mode: overlapping tiles of a large frame, each seen by the backbone at full size, maps stitched back.

A frame is split into `tiles` x `tiles` boxes overlapping by `overlap` (a fraction of a tile); each box is
processed as a frame of its own (shorter side to the backbone size), so a defect of a few pixels covers
`tiles` times more patches than in the whole-frame pass. The bank holds the same tiles of the references.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def tile_boxes(width: int, height: int, tiles: int, overlap: float) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) boxes, row-major, covering the frame; the last row/column ends at the frame's edge."""
    xs = _spans(width, tiles, overlap)
    ys = _spans(height, tiles, overlap)
    return [(x0, y0, x1, y1) for y0, y1 in ys for x0, x1 in xs]


def _spans(length: int, tiles: int, overlap: float) -> list[tuple[int, int]]:
    size = min(length, math.ceil(length / (tiles - (tiles - 1) * overlap)))
    if tiles == 1:
        return [(0, length)]
    step = (length - size) / (tiles - 1)
    return [(round(i * step), round(i * step) + size) for i in range(tiles)]


def stitch(
    grid_maps: torch.Tensor, boxes: list[tuple[int, int, int, int]], size: tuple[int, int], scale: float
) -> torch.Tensor:
    """Tile grid maps (T, hd, wd) -> one (h, w) map at `size`, each tile bilinearly upsampled over its box
    (box pixels x `scale`), overlaps averaged."""
    total = torch.zeros(size, device=grid_maps.device)
    weight = torch.zeros(size, device=grid_maps.device)
    for grid_map, (x0, y0, x1, y1) in zip(grid_maps, boxes, strict=True):
        top, left = round(y0 * scale), round(x0 * scale)
        bottom, right = min(size[0], max(top + 1, round(y1 * scale))), min(size[1], max(left + 1, round(x1 * scale)))
        tile = F.interpolate(grid_map[None, None], size=(bottom - top, right - left), mode="bilinear")[0, 0]
        total[top:bottom, left:right] += tile
        weight[top:bottom, left:right] += 1.0
    return total / weight.clamp(min=1.0)
