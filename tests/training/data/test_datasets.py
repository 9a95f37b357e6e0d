"""Dataset loaders on the real MVTec AD bottle sample and on small VisA-style trees built here."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.training.data import DatasetError, MVTecAD, TestSample, VisA, open_dataset


@pytest.fixture
def bottle(bottle_dir: Path) -> MVTecAD:
    return MVTecAD(bottle_dir.parent, ["bottle_xs"])


def test_mvtec_reads_the_real_bottle_layout(bottle: MVTecAD, bottle_dir: Path) -> None:
    assert bottle.categories == ("bottle_xs",)
    assert [p.name for p in bottle.train_images("bottle_xs")] == [f"{i:03d}.png" for i in range(5)]
    samples = bottle.test_samples("bottle_xs")
    assert [(s.defect_type, s.label) for s in samples] == [("broken_large", 1)] * 5 + [("good", 0)] * 5
    broken = samples[0]
    assert broken.mask_path == bottle_dir / "ground_truth" / "broken_large" / "000_mask.png"
    assert broken.image_path == bottle_dir / "test" / "broken_large" / "000.png"
    assert all(s.mask_path is None for s in samples if s.label == 0)


def test_images_load_lazily_and_masks_resize_nearest(bottle: MVTecAD) -> None:
    broken, good = bottle.test_samples("bottle_xs")[0], bottle.test_samples("bottle_xs")[-1]
    image = broken.load_image()
    assert image.mode == "RGB" and image.size == (900, 900)
    full = broken.load_mask()
    assert full.dtype == bool and full.shape == (900, 900) and 0 < full.mean() < 0.5
    small = broken.load_mask(64)
    assert small.shape == (64, 64) and small.dtype == bool
    assert small.mean() == pytest.approx(full.mean(), abs=0.02)
    assert broken.load_mask((32, 48)).shape == (32, 48)
    assert good.load_mask(64).shape == (64, 64) and not good.load_mask(64).any()
    assert good.load_mask().shape == (900, 900)


def test_reference_sampling_is_seeded_and_distinct(bottle: MVTecAD) -> None:
    draws = {seed: bottle.sample_references("bottle_xs", 2, seed) for seed in range(8)}
    assert draws[0] == bottle.sample_references("bottle_xs", 2, 0)
    assert all(len(set(d)) == 2 and set(d) <= set(bottle.train_images("bottle_xs")) for d in draws.values())
    assert len({tuple(d) for d in draws.values()}) > 1  # different seeds, different draws
    assert len(bottle.sample_references("bottle_xs", 5, 1)) == 5
    with pytest.raises(ValueError, match="between 1 and 5"):
        bottle.sample_references("bottle_xs", 6, 0)


def test_spec_parser(bottle_dir: Path) -> None:
    dataset = open_dataset(f"mvtec:{bottle_dir.parent}")
    assert isinstance(dataset, MVTecAD) and dataset.categories == ("bottle_xs",)
    assert isinstance(open_dataset(f"visa:{bottle_dir.parent}"), VisA)  # VisA converted to the MVTec layout
    for spec in ("mvtec", "imagenet:/x", f"{bottle_dir.parent}", "mvtec:"):
        with pytest.raises(DatasetError, match="KIND:PATH"):
            open_dataset(spec)


def test_clear_errors_name_what_was_expected(tmp_path: Path, bottle_dir: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        MVTecAD(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match=r"expected <root>/<category>/train/good"):
        MVTecAD(tmp_path)
    with pytest.raises(DatasetError, match=r"not found.*screw.*available: bottle_xs"):
        MVTecAD(bottle_dir.parent, ["screw"])
    with pytest.raises(DatasetError, match=r"split_csv/1cls\.csv"):
        VisA(tmp_path)
    with pytest.raises(DatasetError, match="unknown category"):
        MVTecAD(bottle_dir.parent).train_images("screw")


def _png(path: Path, value: int = 0, size: tuple[int, int] = (20, 10)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, value).save(path)


def test_mvtec_missing_mask_names_the_expected_file(tmp_path: Path) -> None:
    _png(tmp_path / "part" / "train" / "good" / "000.png")
    _png(tmp_path / "part" / "test" / "crack" / "000.png")
    with pytest.raises(DatasetError, match=r"ground_truth/crack/000_mask.png"):
        MVTecAD(tmp_path).test_samples("part")
    _png(tmp_path / "part" / "ground_truth" / "crack" / "000.png", 1)  # VisA-converted naming is accepted
    (sample,) = MVTecAD(tmp_path).test_samples("part")
    assert sample.label == 1 and sample.load_mask().all()


def _visa_tree(root: Path) -> None:
    rows = [
        ("candle", "train", "normal", "candle/Data/Images/Normal/0001.JPG", ""),
        ("candle", "train", "normal", "candle/Data/Images/Normal/0000.JPG", ""),
        ("candle", "test", "anomaly", "candle/Data/Images/Anomaly/000.JPG", "candle/Data/Masks/Anomaly/000.png"),
        ("candle", "test", "normal", "candle/Data/Images/Normal/0002.JPG", ""),
        ("pcb1", "train", "normal", "pcb1/Data/Images/Normal/0000.JPG", ""),
        ("pcb1", "test", "normal", "pcb1/Data/Images/Normal/0001.JPG", ""),
    ]
    for _, _, _, image, mask in rows:
        path = root / image
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (24, 16), (90, 80, 70)).save(path, format="JPEG")
        if mask:
            mask_array = np.zeros((16, 24), dtype=np.uint8)
            mask_array[4:8, 6:12] = 3  # VisA masks hold small non-zero class values
            (root / mask).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask_array).save(root / mask)
    (root / "split_csv").mkdir()
    with (root / "split_csv" / "1cls.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["object", "split", "label", "image", "mask"])
        writer.writerows(rows)


def test_visa_split_csv(tmp_path: Path) -> None:
    _visa_tree(tmp_path)
    visa = open_dataset(f"visa:{tmp_path}")
    assert visa.categories == ("candle", "pcb1")
    assert [p.name for p in visa.train_images("candle")] == ["0000.JPG", "0001.JPG"]
    normal, anomalous = visa.test_samples("candle")
    assert normal == TestSample(tmp_path / "candle/Data/Images/Normal/0002.JPG", None, 0, "good", "candle")
    assert (anomalous.label, anomalous.defect_type) == (1, "anomaly")
    mask = anomalous.load_mask((8, 12))
    assert mask.sum() == 2 * 3 and mask[2:4, 3:6].all()
    assert anomalous.load_image().size == (24, 16)
    assert VisA(tmp_path, ["pcb1"]).categories == ("pcb1",)
    assert visa.sample_references("candle", 1, 0) == visa.sample_references("candle", 1, 0)


def test_visa_csv_errors(tmp_path: Path) -> None:
    _visa_tree(tmp_path)
    (tmp_path / "candle/Data/Masks/Anomaly/000.png").unlink()
    with pytest.raises(DatasetError, match=r"names candle/Data/Masks/Anomaly/000.png"):
        VisA(tmp_path).test_samples("candle")
    (tmp_path / "split_csv" / "1cls.csv").write_text("object,image\ncandle,x.png\n")
    with pytest.raises(DatasetError, match="columns object,split,label,image,mask"):
        VisA(tmp_path)
