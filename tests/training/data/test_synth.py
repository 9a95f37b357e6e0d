"""Synthetic anomalies: masks are exactly the changed pixels, draws are seeded, the dataset reads back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.training.data import (
    ANOMALIES,
    PARTS,
    MVTecAD,
    SynthesisError,
    cut_paste,
    perlin_blend,
    perlin_mask,
    perlin_noise,
    render_part,
    write_synthetic_dataset,
)
from model.training.data.__main__ import main


def _changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return (before != after).any(axis=2)


@pytest.mark.parametrize("category", list(PARTS))
@pytest.mark.parametrize("anomaly", list(ANOMALIES))
def test_mask_is_exactly_the_changed_region(category: str, anomaly: str) -> None:
    rng = np.random.default_rng(1)
    normal = render_part(category, 64, rng)
    image, mask = ANOMALIES[anomaly](normal, rng)
    assert image.shape == normal.shape and image.dtype == np.uint8
    assert mask.shape == (64, 64) and mask.dtype == bool
    assert mask.any() and not mask.all()
    assert np.array_equal(mask, _changed(normal, image))


def test_cut_paste_from_another_image_and_without_rotation() -> None:
    rng = np.random.default_rng(0)
    target = np.full((48, 40, 3), 30, dtype=np.uint8)
    donor = np.full((30, 30, 3), 200, dtype=np.uint8)
    image, mask = cut_paste(target, rng, source=donor, max_rotation=0.0, jitter=0.0, scale=(1.0, 1.0))
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    assert mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].all()  # an axis-aligned rectangle
    assert (image[mask] == 200).all() and (image[~mask] == 30).all()


def test_cut_paste_accepts_pil_and_greyscale() -> None:
    rng = np.random.default_rng(0)
    grey = Image.fromarray(render_part("grid", 48, rng)[:, :, 0])  # mode L
    image, mask = cut_paste(grey, rng)
    assert image.shape == (48, 48, 3) and np.array_equal(mask, _changed(np.asarray(grey.convert("RGB")), image))


def test_flat_image_pasted_onto_itself_fails_clearly() -> None:
    flat = np.full((32, 32, 3), 128, dtype=np.uint8)
    with pytest.raises(SynthesisError, match="no visible cut-paste"):
        cut_paste(flat, np.random.default_rng(0), jitter=0.0)
    with pytest.raises(SynthesisError, match="no visible texture blend"):
        perlin_blend(flat, np.random.default_rng(0), texture=flat)


def test_perlin_blend_uses_the_given_texture_inside_the_mask() -> None:
    rng = np.random.default_rng(2)
    image = render_part("striped_plate", 64, rng)
    texture = np.zeros((16, 16, 3), dtype=np.uint8)  # resized to the image
    result, mask = perlin_blend(image, rng, texture, opacity=(0.0, 0.0))
    assert (result[mask] == 0).all() and np.array_equal(result[~mask], image[~mask])


def test_perlin_noise_and_mask_are_seeded_and_bounded() -> None:
    noise = perlin_noise((40, 50), (4, 2), np.random.default_rng(5))
    assert noise.shape == (40, 50) and np.abs(noise).max() <= 1.0 and noise.std() > 0.05
    assert np.array_equal(noise, perlin_noise((40, 50), (4, 2), np.random.default_rng(5)))
    mask = perlin_mask((64, 64), np.random.default_rng(3))
    assert 0.005 <= mask.mean() <= 0.3


@pytest.mark.parametrize("category", list(PARTS))
def test_parts_vary_between_draws_but_not_for_a_seed(category: str) -> None:
    first = render_part(category, 32, np.random.default_rng(0))
    assert np.array_equal(first, render_part(category, 32, np.random.default_rng(0)))
    assert not np.array_equal(first, render_part(category, 32, np.random.default_rng(1)))
    with pytest.raises(ValueError, match="choose from"):
        render_part("teapot", 32, np.random.default_rng(0))


def test_written_dataset_reads_back_as_mvtec(tmp_path: Path) -> None:
    out = write_synthetic_dataset(tmp_path, ["woven", "grid"], 3, 2, 1, size=32, seed=4, progress=False)
    dataset = MVTecAD(out)
    assert dataset.categories == ("grid", "woven")
    assert len(dataset.train_images("woven")) == 3
    samples = dataset.test_samples("woven")
    assert [s.defect_type for s in samples] == ["cut_paste", "good", "good", "texture_blend"]
    for sample in samples:
        mask_png = np.asarray(Image.open(sample.mask_path)) if sample.mask_path else None
        assert mask_png is None or set(np.unique(mask_png)) == {0, 255}
        assert sample.load_mask().any() == bool(sample.label)
    assert json.loads((out / "synthetic.json").read_text())["synthetic"] is True
    with pytest.raises(FileExistsError, match="already exists"):
        write_synthetic_dataset(tmp_path, ["woven"], progress=False)


def test_images_depend_only_on_seed_category_split_and_index(tmp_path: Path) -> None:
    write_synthetic_dataset(tmp_path / "a", ["grid"], 2, 1, 1, size=32, seed=0, progress=False)
    write_synthetic_dataset(tmp_path / "b", ["round_part", "grid"], 4, 0, 2, size=32, seed=0, progress=False)
    for name in ("train/good/001.png", "test/cut_paste/000.png", "ground_truth/texture_blend/000_mask.png"):
        a, b = (np.asarray(Image.open(tmp_path / run / "grid" / name)) for run in "ab")
        assert np.array_equal(a, b)


def test_cli_writes_a_dataset_and_explains_itself(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["synth", str(tmp_path), "--categories", "grid", "--train", "2", "--test-good", "1"]
    assert main([*argv, "--test-bad", "1", "--size", "32", "--seed", "3"]) == 0
    assert len(list((tmp_path / "grid" / "test").rglob("*.png"))) == 3
    assert main(["info", f"mvtec:{tmp_path}"]) == 0
    assert "grid: train 2; test cut_paste 1, good 1, texture_blend 1" in capsys.readouterr().out
    assert main(argv) == 2  # the category folder exists now
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["synth", "--help"])
    assert "MVTec AD layout" in capsys.readouterr().out
