"""Frames and references of several aspects: training-free mode embeds each at its own aspect (AnomalyDINO: the
memory bank has no positions), full mode on the product's grid; a frame of an aspect none of the references has
carries a warning in its prediction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from model import create_detector
from model.geometry import aspect_geometry
from model.preprocess import geometry_pixels, to_backbone_input

ASPECTS = {"1:1": (1, 1), "4:3": (4, 3), "3:4": (3, 4), "2:1": (2, 1)}  # width : height
TINY_GRIDS = {"1:1": (16, 16), "4:3": (16, 21), "3:4": (21, 16), "2:1": (16, 32)}  # shorter side 224, patch 14


def aspect_crop(image: Image.Image, aspect: tuple[int, int]) -> Image.Image:
    """The largest centred crop of `image` with width : height = aspect."""
    w, h = image.size
    cw, ch = min(w, h * aspect[0] // aspect[1]), min(h, w * aspect[1] // aspect[0])
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    return image.crop((x0, y0, x0 + cw, y0 + ch))


@pytest.fixture(scope="module")
def bottles(bottle_dir) -> list[Image.Image]:
    paths = sorted((bottle_dir / "train" / "good").glob("*.png")) + sorted(
        (bottle_dir / "test" / "broken_large").glob("*.png")
    )
    return [Image.open(p).convert("RGB") for p in paths]


@pytest.fixture(scope="module")
def full_detector():
    return create_detector("tiny", device="cpu", heads_file="random")


def crops(image: Image.Image) -> dict[str, Image.Image]:
    return {name: aspect_crop(image, aspect) for name, aspect in ASPECTS.items()}


def test_training_free_frames_of_each_aspect_keep_their_own_grid(tiny_detector, bottles):
    refs = tiny_detector.fit_references([bottles[0]])  # square references
    frames = crops(bottles[5])
    batch = tiny_detector.prepare(list(frames.values()), refs)
    assert [f.grid for f in batch.frames] == [TINY_GRIDS[name] for name in frames]
    predictions = tiny_detector.maps(batch, tiny_detector.forward(batch, refs))
    assert [p.anomaly_map.shape for p in predictions] == [f.size[::-1] for f in frames.values()]


def test_full_mode_brings_every_frame_and_reference_to_the_product_grid(full_detector, bottles):
    refs = full_detector.fit_references([bottles[0], crops(bottles[1])["2:1"]])
    assert refs.grids == [(16, 16), (16, 16)]  # the second reference stretched to the first's grid
    frames = crops(bottles[5])
    batch = full_detector.prepare(list(frames.values()), refs)
    assert [f.grid for f in batch.frames] == [(16, 16)] * 4
    predictions = full_detector.predict(list(frames.values()), refs)
    assert predictions[0].warnings == ()
    for prediction in predictions[1:]:
        (warning,) = prediction.warnings
        assert "another aspect" in warning and "resized to the references' 224x224 input" in warning
        assert "theirs 16x16" in warning


def own_tokens(detector, image: Image.Image) -> torch.Tensor:
    """AnomalyDINO by hand: the image at its own geometry through DINOv2 -> (Nd, Dd) L2-normalised patch tokens."""
    geometry = aspect_geometry(image.height, image.width, detector.config.dino.image_size, detector.patch_size)
    pixels = torch.from_numpy(geometry_pixels(image, geometry))[None]  # (1, Hd, Wd, 3)
    config = detector.config.dino
    tokens = detector.encode_dino(to_backbone_input(pixels, config.mean, config.std, detector.device)).patch_tokens
    return F.normalize(tokens[0], dim=-1)  # (Nd, Dd)


@pytest.mark.parametrize("test_aspect", ["3:4", "2:1"])
def test_training_free_mixed_aspects_score_as_anomalydino_by_hand(tiny_detector, bottles, test_aspect):
    references = [bottles[0], crops(bottles[1])["2:1"], crops(bottles[2])["4:3"]]
    refs = tiny_detector.fit_references(references)
    assert refs.grids == [TINY_GRIDS["1:1"], TINY_GRIDS["2:1"], TINY_GRIDS["4:3"]]
    frame = crops(bottles[6])[test_aspect]
    bank = torch.cat([own_tokens(tiny_detector, r) for r in references])  # (N, Dd)
    distances = 1.0 - (own_tokens(tiny_detector, frame) @ bank.T).amax(dim=1)  # (Nd,)
    top = max(1, int(0.01 * distances.numel()))
    expected = float(distances.sort(descending=True).values[:top].mean())
    (prediction,) = tiny_detector.predict([frame], refs)
    assert prediction.score == pytest.approx(expected, rel=1e-5)


def test_a_frame_of_an_aspect_no_reference_has_carries_a_warning(tiny_detector, bottles, caplog):
    refs = tiny_detector.fit_references([bottles[0], crops(bottles[1])["2:1"]])
    frames = crops(bottles[5])
    nearly_square = bottles[6].crop((0, 0, 900, 894))  # 0.7 % off: a few pixels of crop, no camera change
    off_square = bottles[6].crop((0, 0, 900, 880))  # 2.3 % off (the same 16 x 16 grid): a changed ROI
    with caplog.at_level("WARNING"):
        predictions = tiny_detector.predict([frames["1:1"], frames["2:1"], nearly_square, frames["4:3"]], refs)
        again, off = tiny_detector.predict([frames["3:4"], off_square], refs)
    assert [p.warnings for p in predictions[:3]] == [(), (), ()]
    for prediction in (predictions[3], again, off):  # on every such frame, not only the first
        (warning,) = prediction.warnings
        assert "another aspect" in warning and "inspected at its own aspect" in warning
    assert "(1.000, 2.000, more than 1% apart)" in predictions[3].warnings[0]
    assert "675 x 900 frame (aspect 0.750)" in again.warnings[0]
    assert sum("another aspect" in r.getMessage() for r in caplog.records) == 1  # logged once per product


def test_mixed_references_survive_save_subset_extend_and_leave_one_out(tiny_detector, bottles, tmp_path):
    references = [bottles[0], crops(bottles[1])["2:1"], crops(bottles[2])["3:4"]]
    refs = tiny_detector.fit_references(references)
    refs.save(tmp_path / "refs")
    loaded = tiny_detector.load_references(tmp_path / "refs")
    assert loaded.grids == refs.grids == [TINY_GRIDS["1:1"], TINY_GRIDS["2:1"], TINY_GRIDS["3:4"]]
    torch.testing.assert_close(loaded.patch_tokens, refs.patch_tokens)
    subset = tiny_detector.subset_references(loaded, [0, 2])
    assert subset.grids == [TINY_GRIDS["1:1"], TINY_GRIDS["3:4"]]
    torch.testing.assert_close(subset.reference_tokens()[1], refs.reference_tokens()[2])
    extended = tiny_detector.extend_references(subset, [crops(bottles[3])["4:3"]])
    assert extended.grids == [TINY_GRIDS["1:1"], TINY_GRIDS["3:4"], TINY_GRIDS["4:3"]]
    held_out = tiny_detector.held_out_predictions(extended)
    assert [p.anomaly_map.shape for p in held_out] == [(900, 900), (900, 675), (675, 900)]
    assert all(np.isfinite(p.score) for p in held_out)
    with pytest.raises(ValueError, match="several grids"):
        extended.stacked_tokens()
