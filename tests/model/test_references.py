"""ReferenceSet persistence: identical predictions after save/load; mismatched configs refused clearly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from model import ReferenceMismatchError, ReferenceSet, create_detector
from model.config import load_config
from model.references import feature_fingerprint
from tests.helpers.images import pil, textured_part, with_defect


@pytest.mark.parametrize("heads", [None, "random"], ids=["training-free", "full"])
def test_save_load_gives_identical_predictions(tmp_path, heads):
    det = create_detector("tiny", device="cpu", heads_file=heads)
    refs = det.fit_references([pil(textured_part(s)) for s in range(3)])
    query = [pil(with_defect(textured_part(5), 20, 30, 40)[0]), pil(textured_part(6))]
    before = det.predict(query, refs)
    refs.save(tmp_path / "refs")
    loaded = det.load_references(tmp_path / "refs")
    after = det.predict(query, loaded)
    assert loaded.n_references == 3 and loaded.bank_size == refs.bank_size
    for a, b in zip(before, after, strict=True):
        # the same tensors go in; equal up to float reordering (BLAS kernels may depend on memory alignment)
        assert a.score == pytest.approx(b.score, rel=1e-6)
        np.testing.assert_allclose(a.anomaly_map, b.anomaly_map, rtol=1e-5, atol=1e-7)


def test_saved_folder_is_plain_files_with_metadata(tmp_path, tiny_detector):
    tiny_detector.fit_references([pil(textured_part(1))]).save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bank.npy", "features.safetensors", "meta.json"]
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["config_name"] == "tiny" and meta["n_references"] == 1
    assert {"torch", "timm", "open_clip"} <= set(meta["versions"])


def test_references_of_another_config_are_refused(tmp_path, tiny_detector):
    tiny_detector.fit_references([pil(textured_part(1))]).save(tmp_path / "refs")
    det = create_detector("tiny", device="cpu", name="tiny-112", dino={"image_size": 112})
    with pytest.raises(ReferenceMismatchError, match="fit the references again"):
        det.load_references(tmp_path / "refs")
    with pytest.raises(ReferenceMismatchError):
        det.predict([pil(textured_part(2))], ReferenceSet.load(tmp_path / "refs"))


def test_random_init_references_do_not_mix_with_real_weight_features(tmp_path, tiny_detector):
    refs = tiny_detector.fit_references([pil(textured_part(1))])
    refs.fingerprint = "0123456789abcdef"
    with pytest.raises(ReferenceMismatchError):
        tiny_detector.predict([pil(textured_part(2))], refs)


def test_loading_an_incomplete_folder_says_what_is_missing(tmp_path):
    (tmp_path / "meta.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"features\.safetensors"):
        ReferenceSet.load(tmp_path)


def test_subset_references_equal_fitting_the_subset(tiny_detector):
    images = [pil(textured_part(s)) for s in range(3)]
    refs = tiny_detector.fit_references(images)
    subset = tiny_detector.subset_references(refs, [0, 2])
    direct = tiny_detector.fit_references([images[0], images[2]])
    assert subset.n_references == 2 and subset.bank_size == direct.bank_size
    assert subset.meta["image_sizes"] == [list(images[0].size), list(images[2].size)]
    query = [pil(textured_part(9))]
    a, b = tiny_detector.predict(query, subset)[0], tiny_detector.predict(query, direct)[0]
    assert a.score == pytest.approx(b.score, rel=1e-5)
    np.testing.assert_allclose(a.anomaly_map, b.anomaly_map, rtol=1e-4, atol=1e-6)


def test_reference_fingerprint_includes_precision_and_device_type():
    cfg = load_config("tiny")
    cpu = feature_fingerprint(cfg, True, torch.device("cpu"))
    assert cpu == feature_fingerprint(cfg, True, torch.device("cpu"))
    assert cpu != feature_fingerprint(cfg, True, torch.device("cuda"))  # bf16 there: refit, never reuse
