"""Tiled mode: tiles cover the frame, the bank holds the references' tiles, a few-pixel defect stands out."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from model import create_detector
from model.extras.tiling import stitch, tile_boxes


def test_tiles_cover_the_frame_with_overlap():
    boxes = tile_boxes(2448, 2048, 4, 0.1)
    assert len(boxes) == 16
    assert boxes[0][:2] == (0, 0) and boxes[-1][2:] == (2448, 2048)
    covered = np.zeros((2048, 2448), bool)
    for x0, y0, x1, y1 in boxes:
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    assert boxes[1][0] < boxes[0][2]  # neighbours overlap


def test_stitch_averages_overlaps():
    boxes = [(0, 0, 6, 4), (4, 0, 10, 4)]
    maps = torch.stack([torch.zeros(2, 3), torch.ones(2, 3)])
    stitched = stitch(maps, boxes, (4, 10), 1.0)
    assert stitched[:, :4].eq(0).all() and stitched[:, 6:].eq(1).all() and stitched[:, 4:6].eq(0.5).all()


def textured_frame(width: int, height: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    base = (np.sin(xx / 9.0) + np.cos(yy / 11.0)) * 40 + 128  # (H, W)
    pixels = np.stack([base, base * 0.9, base * 0.8], axis=-1) + rng.normal(0, 3, (height, width, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def detector_with_tiles(tiles: int):
    return create_detector("tiny", device="cpu", inference={"tiles": tiles})


@pytest.mark.e2e
def test_a_few_pixel_defect_on_a_2448x2048_frame_stands_out_in_tiled_mode(tmp_path):
    good = textured_frame(2448, 2048)
    defect = good.copy()
    defect[1500:1506, 700:706] = 0  # 6 x 6 px
    changes = {}
    for tiles in (1, 4):
        detector = detector_with_tiles(tiles)
        refs = detector.fit_references([Image.fromarray(good)])
        normal, anomalous = detector.predict([Image.fromarray(good), Image.fromarray(defect)], refs)
        assert anomalous.anomaly_map.shape == (2048, 2448)
        change = anomalous.anomaly_map - normal.anomaly_map
        y, x = np.unravel_index(np.argmax(anomalous.anomaly_map), change.shape)
        assert abs(x - 703) < 60 and abs(y - 1503) < 60, (tiles, x, y)  # the map's peak is at the defect
        changes[tiles] = float(change[1500:1506, 700:706].max())
    assert changes[4] > 5 * changes[1]  # tiles see the defect with 4x the resolution per side
