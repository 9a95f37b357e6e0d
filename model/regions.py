"""Defect regions: the 8-connected components of a binary mask, measured on the anomaly map (blob analysis).

Machine-vision tools (Halcon's `connection` + `region_features`, Cognex and Keyence blob tools) answer an
inspection in these terms: how many defects, how large, where. Coordinates are pixel indices of the map
(x = column, y = row); a box is `[x0, y0, x1, y1]` with x1 and y1 exclusive, so its width is `x1 - x0`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

EIGHT_CONNECTED = ndimage.generate_binary_structure(2, 2)  # (3, 3) all True: diagonal neighbours join


@dataclass(frozen=True)
class Region:
    """One connected component. Areas in pixels; values are anomaly-map values inside the component."""

    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)
    centroid: tuple[float, float]  # x, y: mean pixel index
    area_px: int
    max_value: float
    mean_value: float

    @property
    def width_px(self) -> int:
        """The bounding box's width in pixels."""
        return self.bbox[2] - self.bbox[0]

    @property
    def height_px(self) -> int:
        """The bounding box's height in pixels."""
        return self.bbox[3] - self.bbox[1]


@dataclass(frozen=True)
class RegionSet:
    """All regions of one mask at or above the minimum area, sorted by `max_value` (highest first)."""

    regions: tuple[Region, ...]
    label_image: np.ndarray  # (H, W) int32: 0 background, i + 1 for regions[i]; components below min area are 0

    def __len__(self) -> int:
        return len(self.regions)


def find_regions(anomaly_map: np.ndarray, mask: np.ndarray, min_area_px: int = 1) -> RegionSet:
    """Connected components of `mask` (8-connectivity), each measured on `anomaly_map`.

    anomaly_map: (H, W) float; mask: (H, W) bool, same shape. Components smaller than `min_area_px` pixels are
    dropped (specks). Raises ValueError on mismatched shapes or a minimum area below 1.
    """
    if anomaly_map.shape != mask.shape or anomaly_map.ndim != 2:
        raise ValueError(f"anomaly map {anomaly_map.shape} and mask {mask.shape} must be the same (H, W)")
    if min_area_px < 1:
        raise ValueError(f"min_area_px must be at least 1, got {min_area_px}")
    labels, n = ndimage.label(mask, structure=EIGHT_CONNECTED)  # (H, W) int32, 0 = background
    if n == 0:
        return RegionSet((), labels)
    index = np.arange(1, n + 1)
    flat = labels.ravel()
    values = anomaly_map.ravel().astype(np.float64)
    areas = np.bincount(flat, minlength=n + 1)[1:]  # (n,)
    sums = np.bincount(flat, weights=values, minlength=n + 1)[1:]  # (n,)
    maxima = ndimage.maximum(anomaly_map, labels, index)  # (n,)
    ys, xs = np.indices(labels.shape)
    mean_x = np.bincount(flat, weights=xs.ravel(), minlength=n + 1)[1:] / areas
    mean_y = np.bincount(flat, weights=ys.ravel(), minlength=n + 1)[1:] / areas
    slices = ndimage.find_objects(labels)
    kept = [i for i in range(n) if areas[i] >= min_area_px]
    kept.sort(key=lambda i: (-maxima[i], -areas[i], slices[i][0].start, slices[i][1].start))
    regions = tuple(
        Region(
            bbox=(slices[i][1].start, slices[i][0].start, slices[i][1].stop, slices[i][0].stop),
            centroid=(float(mean_x[i]), float(mean_y[i])),
            area_px=int(areas[i]),
            max_value=float(maxima[i]),
            mean_value=float(sums[i] / areas[i]),
        )
        for i in kept
    )
    relabel = np.zeros(n + 1, dtype=np.int32)
    relabel[np.array(kept, dtype=np.int64) + 1] = np.arange(1, len(kept) + 1, dtype=np.int32)
    return RegionSet(regions, relabel[labels])  # (H, W)
