"""Detector behaviour on the tiny config (random weights): API contract, modes, image formats, defect response."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from model import create_detector
from tests.helpers.images import pil, textured_part, with_defect


@pytest.fixture(scope="module")
def refs(tiny_detector):
    return tiny_detector.fit_references([pil(textured_part(s)) for s in range(2)])


@pytest.fixture(scope="module")
def full_detector():
    return create_detector("tiny", device="cpu", heads_file="random")


def test_tiny_detector_is_training_free_with_random_weights(tiny_detector):
    assert tiny_detector.mode == "training-free"
    assert tiny_detector.random_weights
    assert tiny_detector.network.clip is None  # CLIP is not even built without heads


def test_fit_references_summary(tiny_detector, refs):
    hd, wd = tiny_detector.network.dino_grid
    assert refs.n_references == 2
    assert refs.patch_tokens.shape == (2 * hd * wd, tiny_detector.network.dino.width)  # reference after reference
    assert refs.grids == [(hd, wd), (hd, wd)]
    assert refs.cls_tokens.shape == (2, tiny_detector.network.dino.width)
    assert refs.bank_size == 2 * hd * wd
    assert refs.config_name == "tiny"


@pytest.mark.parametrize(
    "make",
    [
        lambda: Image.new("RGB", (300, 200), (120, 90, 60)),
        lambda: Image.new("L", (64, 97), 128),
        lambda: Image.new("RGBA", (150, 150), (10, 200, 30, 128)),
        lambda: Image.fromarray(np.full((80, 120), 40000, dtype=np.uint16)),
        lambda: Image.new("P", (50, 60), 3),
        lambda: Image.new("1", (90, 40), 1),
    ],
    ids=["rgb", "grey", "rgba", "16bit", "palette", "bilevel"],
)
def test_predict_any_mode_and_size_gives_map_at_input_size(tiny_detector, refs, make):
    image = make()
    (pred,) = tiny_detector.predict([image], refs)
    assert pred.anomaly_map.shape == (image.height, image.width)
    assert pred.anomaly_map.dtype == np.float32
    assert np.isfinite(pred.anomaly_map).all() and np.isfinite(pred.score)
    assert pred.mode == "training-free" and pred.random_weights


def test_predict_is_batched_one_backbone_forward_per_batch(tiny_detector, refs):
    calls = []
    handle = tiny_detector.network.dino.register_forward_hook(lambda *a: calls.append(1))
    try:
        preds = tiny_detector.predict([pil(textured_part(s)) for s in range(5)], refs)
    finally:
        handle.remove()
    assert len(preds) == 5 and len(calls) == 1


def test_batch_and_single_predictions_agree(tiny_detector, refs):
    images = [pil(textured_part(s)) for s in (7, 8, 9)]
    batched = tiny_detector.predict(images, refs)
    single = [tiny_detector.predict([img], refs)[0] for img in images]
    for b, s in zip(batched, single, strict=True):
        assert b.score == pytest.approx(s.score, rel=1e-4, abs=1e-5)
        np.testing.assert_allclose(b.anomaly_map, s.anomaly_map, rtol=1e-4, atol=1e-5)


def test_pasted_defect_stands_out_and_scores_above_good_parts(tiny_detector):
    refs = tiny_detector.fit_references([pil(textured_part(s)) for s in range(3)])
    defective, mask = with_defect(textured_part(10), top=84, left=112, side=56)
    goods = [pil(textured_part(s)) for s in (11, 12, 13)]
    preds = tiny_detector.predict([pil(defective), *goods], refs)
    amap = preds[0].anomaly_map
    assert amap[mask].mean() > 2.0 * amap[~mask].mean()
    peak = np.unravel_index(np.argmax(amap), amap.shape)
    assert mask[peak]
    assert preds[0].score > max(p.score for p in preds[1:])


def test_full_mode_with_heads(full_detector, refs):
    assert full_detector.mode == "full"
    assert full_detector.network.clip is not None
    preds = full_detector.predict([pil(textured_part(3)), Image.new("L", (70, 50), 9)], refs)
    assert [p.mode for p in preds] == ["full", "full"]
    assert preds[1].anomaly_map.shape == (50, 70)
    assert all(0.0 <= p.score <= 1.0 for p in preds)
    assert set(preds[0].timings_ms) == {"preprocess", "dino", "clip", "bank_search", "heads", "postprocess"}


def test_training_free_and_full_modes_differ_on_same_references(tiny_detector, full_detector, refs):
    image = pil(textured_part(4))
    (free,) = tiny_detector.predict([image], refs)
    (full,) = full_detector.predict([image], refs)
    difference = np.abs(free.anomaly_map - full.anomaly_map).max()
    assert difference > 0.1 * np.abs(full.anomaly_map).max()  # a real difference (about 1x), not rounding


def test_tiny_weights_are_identical_across_builds():
    a = create_detector("tiny", device="cpu")
    b = create_detector("tiny", device="cpu")
    for (name, pa), (_, pb) in zip(a.network.state_dict().items(), b.network.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), name


def test_random_init_is_loud(caplog):
    with caplog.at_level("WARNING"):
        det = create_detector("tiny", device="cpu", random_init=True)
    assert det.random_weights
    assert "RANDOM BACKBONE WEIGHTS" in caplog.text


def test_empty_and_wrong_inputs_are_refused(tiny_detector, refs):
    with pytest.raises(ValueError, match="no images"):
        tiny_detector.predict([], refs)
    with pytest.raises(TypeError, match="PIL"):
        tiny_detector.predict([np.zeros((10, 10, 3))], refs)


def test_real_mvtec_bottle_images_through_the_whole_pipeline(bottle_dir, full_detector):
    """Real 900x900 MVTec images (random weights: exercises sizes and layout, says nothing of accuracy)."""
    from model.training.data.datasets import load_image

    train = sorted((bottle_dir / "train" / "good").glob("*.png"))[:2]
    tests = sorted((bottle_dir / "test" / "broken_large").glob("*.png"))[:2]
    refs = full_detector.fit_references([load_image(p) for p in train])
    preds = full_detector.predict([load_image(p) for p in tests], refs)
    assert [p.anomaly_map.shape for p in preds] == [(900, 900), (900, 900)]
    assert all(np.isfinite(p.anomaly_map).all() for p in preds)
