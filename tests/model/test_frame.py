"""Real camera geometry through the detector: aspect kept, maps at the frame's size, per-product grid and bit depth."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from model import Frame, create_detector
from model.preprocess import to_backbone_input


@pytest.fixture(scope="module")
def detector_448():
    """The tiny config (random weights) with DINOv2 at the real 448 px, so a patch is 1080/448*14 px of a frame."""
    return create_detector("tiny", device="cpu", dino={"image_size": 448})


def blob_size(anomaly_map: np.ndarray) -> tuple[int, int]:
    """(width, height) of the connected region above half the maximum that holds the maximum."""
    labels, _ = ndimage.label(anomaly_map > anomaly_map.max() / 2)
    y, x = np.unravel_index(np.argmax(anomaly_map), anomaly_map.shape)
    rows, cols = ndimage.find_objects(labels)[labels[y, x] - 1]
    return cols.stop - cols.start, rows.stop - rows.start


def test_square_defect_on_a_16_9_frame_gives_a_square_blob(detector_448, hard_cases):
    good = Image.open(hard_cases / "wide_1920x1080_good.jpg")
    defect = Image.open(hard_cases / "wide_1920x1080_defect.jpg")  # a 24 x 24 dark square at x 1200, y 500
    refs = detector_448.fit_references([good])
    assert refs.geometry.grid == (32, 56)  # shorter side 448, the longer in proportion, crop to 14
    normal, anomalous = detector_448.predict([good, defect], refs)
    assert anomalous.anomaly_map.shape == (1080, 1920)
    change = anomalous.anomaly_map - normal.anomaly_map  # what the square alone changed (random weights)
    y, x = np.unravel_index(np.argmax(change), change.shape)
    assert 1150 <= x <= 1275 and 450 <= y <= 575
    width, height = blob_size(change)
    assert 0.75 <= width / height <= 1.33, (width, height)  # a squashed frame gives about 1.78


def test_frames_of_another_aspect_come_back_at_their_own_size(tiny_detector, bottle_dir, caplog):
    image = Image.open(sorted((bottle_dir / "train" / "good").glob("*.png"))[0]).convert("RGB")
    refs = tiny_detector.fit_references([image])
    wide = image.resize((400, 150))
    with caplog.at_level("WARNING"):
        first, _ = tiny_detector.predict([wide, wide], refs)
        tiny_detector.predict([wide], refs)
    assert first.anomaly_map.shape == (150, 400)
    assert sum("another aspect" in r.message for r in caplog.records) == 1  # once per product
    small = image.resize((300, 300))  # the references' aspect at another size: its own geometry, same grid
    assert tiny_detector.predict([small], refs)[0].anomaly_map.shape == (300, 300)


def test_a_reduced_decode_gives_the_map_at_the_camera_size(tiny_detector, bottle_dir):
    image = Image.open(sorted((bottle_dir / "train" / "good").glob("*.png"))[0]).convert("RGB")
    refs = tiny_detector.fit_references([image])
    small = Frame(image.resize((450, 450)), camera_size=(900, 900))
    assert tiny_detector.predict([small], refs)[0].anomaly_map.shape == (900, 900)


def test_frames_above_the_product_bit_depth_are_logged_once_per_product(tiny_detector, caplog):
    ramp = np.tile(np.linspace(0, 1000, 64), (64, 1))  # (64, 64) 10-bit data
    reference = Image.fromarray(ramp.astype(np.uint16))
    bright = Image.fromarray((ramp * 4).astype(np.uint16))  # up to 4000: clipped white at 10 bits
    refs = tiny_detector.fit_references([reference])
    assert refs.bit_depth == 10
    with caplog.at_level("WARNING"):
        tiny_detector.predict([reference], refs)
        assert not any("bit depth" in r.getMessage() for r in caplog.records)
        tiny_detector.predict([bright, bright], refs)
        tiny_detector.predict([bright], refs)
    logged = [r.getMessage() for r in caplog.records if "bit depth" in r.getMessage()]
    assert len(logged) == 1 and "values up to 4000, above its product's bit depth of 10 bits (0..1023)" in logged[0]


def test_mono12_square_stays_visible_at_8_bits(tiny_detector, hard_cases):
    frame = Image.open(hard_cases / "mono12_in_16bit.png")  # 0..~3800 of 4095, +200 DN at x 150..169, y 90..109
    refs = tiny_detector.fit_references([frame])
    assert refs.bit_depth == 12  # no sBIT: the references' maximum rounded up

    def contrast(grey: np.ndarray) -> float:  # the square's mean minus its left and right neighbours'
        around = np.concatenate([grey[92:108, 140:148].ravel(), grey[92:108, 172:180].ravel()])
        return float(grey[92:108, 152:168].mean() - around.mean())

    raw = np.asarray(frame, dtype=np.float64)  # (H, W) DN
    eight_bit = np.asarray(Frame(frame).rgb(refs.bit_depth), dtype=np.float64)[:, :, 0]  # (H, W)
    assert contrast(eight_bit) == pytest.approx(contrast(raw) * 255 / 4095, abs=0.5)
    assert contrast(eight_bit) > 10  # the +200 DN square: >10 grey levels at 8 bits, not ~1 as with / 65535
    assert tiny_detector.predict([frame], refs)[0].anomaly_map.shape == (192, 256)


def test_alpha_zero_frame_is_read_by_its_colour(tiny_detector, hard_cases):
    frame = Image.open(hard_cases / "alpha_zero.png")
    colour = np.asarray(frame)[:, :, :3]
    np.testing.assert_array_equal(np.asarray(Frame(frame).rgb()), colour)
    refs = tiny_detector.fit_references([frame])
    other_part = Image.fromarray(np.dstack([np.roll(colour, 64, axis=1), np.zeros(colour.shape[:2], np.uint8)]))
    same, other = tiny_detector.predict([frame, other_part], refs)
    assert other.score > same.score  # a different part gives a different score, never "all black"


def test_top_one_percent_is_int_of_n_like_anomalydino(tiny_detector, bottle_dir):
    image = Image.open(sorted((bottle_dir / "test" / "broken_large").glob("*.png"))[0]).convert("RGB")
    refs = tiny_detector.fit_references([Image.open(sorted((bottle_dir / "train" / "good").glob("*.png"))[0])])
    score = tiny_detector.predict([image], refs)[0].score
    hd, wd = refs.geometry.grid
    assert hd * wd == 256 and int(0.01 * 256) == 2  # ceil would take 3
    pixels = tiny_detector.prepare([image], refs).frames[0].dino  # (1, Hd, Wd, 3) at the product's geometry
    config = tiny_detector.config.dino
    dino = tiny_detector.encode_dino(to_backbone_input(pixels, config.mean, config.std, tiny_detector.device))
    distances = np.sort(1.0 - refs.bank.max_similarity(dino.patch_tokens)[0].numpy())[::-1]
    assert score == pytest.approx(distances[:2].mean(), rel=1e-5)
