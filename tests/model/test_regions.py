"""Defect regions: connected components of a mask measured on the anomaly map."""

from __future__ import annotations

import numpy as np
import pytest

from model.regions import find_regions


@pytest.fixture(scope="module")
def bottle_masks(bottle_dir) -> list[np.ndarray]:
    from PIL import Image

    paths = sorted((bottle_dir / "ground_truth").rglob("*_mask.png"))
    assert paths, "the bottle sample has ground-truth masks"
    return [np.asarray(Image.open(path)) > 0 for path in paths]


def rectangle_map(height: int, width: int, x0: int, y0: int, x1: int, y1: int, value: float = 1.0) -> np.ndarray:
    anomaly_map = np.zeros((height, width), dtype=np.float32)
    anomaly_map[y0:y1, x0:x1] = value
    return anomaly_map


def test_a_rectangle_gives_its_box_area_centroid_and_values():
    anomaly_map = rectangle_map(60, 80, x0=10, y0=20, x1=30, y1=25, value=0.8)
    anomaly_map[22, 15] = 0.95
    (region,) = find_regions(anomaly_map, anomaly_map > 0.5).regions
    assert region.bbox == (10, 20, 30, 25)
    assert (region.width_px, region.height_px) == (20, 5)
    assert region.area_px == 100
    assert region.centroid == pytest.approx((19.5, 22.0))
    assert region.max_value == pytest.approx(0.95)
    assert region.mean_value == pytest.approx((99 * 0.8 + 0.95) / 100)


def test_diagonal_neighbours_join_eight_connectivity():
    mask = np.zeros((5, 5), dtype=bool)
    mask[1, 1] = mask[2, 2] = mask[3, 3] = True
    regions = find_regions(mask.astype(np.float32), mask)
    assert len(regions) == 1 and regions.regions[0].area_px == 3


def test_specks_below_the_minimum_area_are_dropped_and_unlabelled():
    anomaly_map = rectangle_map(40, 40, 2, 2, 12, 12)
    anomaly_map[30, 30] = 1.0  # a one-pixel speck
    found = find_regions(anomaly_map, anomaly_map > 0.5, min_area_px=4)
    assert [r.area_px for r in found.regions] == [100]
    assert found.label_image[30, 30] == 0 and found.label_image[5, 5] == 1


def test_regions_are_sorted_by_their_maximum_value():
    anomaly_map = rectangle_map(30, 60, 0, 0, 10, 10, value=0.6)
    anomaly_map[15:20, 40:50] = 0.9
    found = find_regions(anomaly_map, anomaly_map > 0.5)
    assert [r.max_value for r in found.regions] == pytest.approx([0.9, 0.6])
    assert found.regions[0].bbox == (40, 15, 50, 20)
    assert found.label_image[17, 45] == 1 and found.label_image[5, 5] == 2


def test_an_empty_mask_has_no_regions():
    assert len(find_regions(np.zeros((8, 8), np.float32), np.zeros((8, 8), bool))) == 0


@pytest.mark.parametrize(("shape", "min_area"), [((8, 9), 1), ((8, 8), 0)])
def test_bad_arguments_are_refused(shape, min_area):
    with pytest.raises(ValueError):
        find_regions(np.zeros((8, 8), np.float32), np.zeros(shape, bool), min_area_px=min_area)


def test_real_ground_truth_masks_split_into_regions_that_cover_them(bottle_masks):
    for mask in bottle_masks:
        found = find_regions(mask.astype(np.float32), mask)
        assert sum(r.area_px for r in found.regions) == int(mask.sum())
        ys, xs = np.nonzero(mask)
        boxes = np.array([r.bbox for r in found.regions])
        assert (boxes[:, 0].min(), boxes[:, 1].min()) == (xs.min(), ys.min())
        assert (boxes[:, 2].max(), boxes[:, 3].max()) == (xs.max() + 1, ys.max() + 1)
