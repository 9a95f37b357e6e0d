"""AnomalyDINO's optional extras: rotated reference views and PCA background masking (off by default)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from model import create_detector, load_config
from model.extras.anomalydino import background_mask, rotated


def test_options_are_off_by_default():
    for name in ("paper", "edge", "tiny"):
        inference = load_config(name).inference
        assert not inference.reference_rotations and not inference.background_masking


def test_rotation_matches_the_authors_cv2_call():
    cv2 = pytest.importorskip("cv2")
    array = np.random.default_rng(0).integers(0, 256, (40, 64, 3), dtype=np.uint8)
    for angle in (45, 90, 135):
        matrix = cv2.getRotationMatrix2D((64 / 2, 40 / 2), angle, 1.0)
        expected = cv2.warpAffine(array, matrix, (64, 40), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_DEFAULT)
        ours = np.asarray(rotated(Image.fromarray(array), angle)).astype(int)
        assert np.mean(np.abs(ours - expected)) < 2.0  # interpolation rounding only


def test_background_mask_keeps_the_centred_object():
    rng = np.random.default_rng(0)
    tokens = rng.normal(0, 0.1, (10, 10, 16)).astype(np.float32)
    tokens[2:8, 2:8, 0] += 30.0  # a centred object, far from the background in token space
    mask = background_mask(torch.from_numpy(tokens.reshape(100, 16)), (10, 10)).reshape(10, 10)
    assert mask[5, 5] and mask[2, 2] and not mask[0, 0] and not mask[9, 9]


def test_detector_with_both_options(tmp_path, bottle_dir):
    options = {"reference_rotations": True, "background_masking": True}
    detector = create_detector("tiny", device="cpu", inference=options)
    image = Image.open(sorted((bottle_dir / "train" / "good").glob("*.png"))[0]).convert("RGB")
    refs = detector.fit_references([image])
    assert refs.bank_size == 8 * 256  # eight rotations of the one reference (16 x 16 grid)
    prediction = detector.predict([image], refs)[0]
    assert prediction.anomaly_map.shape == (900, 900) and np.isfinite(prediction.score)
