"""Frame preprocessing: AnomalyDINO geometry, real bit depth, alpha, smoothing as scipy does it."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter

from model.backbones import DinoBackbone
from model.config import load_config
from model.preprocess import (
    FRAME_SIZE_KEY,
    SIGNIFICANT_BITS_KEY,
    Geometry,
    above_bit_depth,
    aspect_geometry,
    backbone_batch,
    bit_depth_of,
    frame_size,
    gaussian_smooth,
    png_significant_bits,
    reduced,
    to_rgb_array,
)


def test_geometry_keeps_the_aspect_like_anomalydino():
    wide = aspect_geometry(1080, 1920, 448, 14)  # shorter side 448, longer int(448 * 1920 / 1080) = 796
    assert wide.resized == (448, 796) and wide.input == (448, 784) and wide.grid == (32, 56)
    tall = aspect_geometry(1000, 750, 448, 14)
    assert tall.resized == (597, 448) and tall.grid == (42, 32)
    assert aspect_geometry(900, 900, 448, 14).grid == (32, 32)


def test_an_extreme_aspect_is_capped_so_the_patch_grid_stays_bounded(tiny_detector):
    """A 2 x 2000 px reference gave a 16 x 16000 patch grid (256k tokens) that kept the model busy for minutes."""
    assert aspect_geometry(2000, 2, 224, 14) == Geometry(resized=(1792, 224), input=(1792, 224), grid=(128, 16))
    assert aspect_geometry(2, 2000, 224, 14).grid == (16, 128)
    assert aspect_geometry(100, 800, 224, 14).resized == (224, 1792)  # exactly 8:1: AnomalyDINO's own geometry
    strip = Image.fromarray(np.full((2000, 2, 3), 128, dtype=np.uint8))  # (H, W, 3)
    refs = tiny_detector.fit_references([strip])
    short = tiny_detector.config.dino.image_size // tiny_detector.network.dino.patch_size
    assert tuple(refs.geometry.grid) == (8 * short, short)
    assert tiny_detector.predict([strip], refs)[0].anomaly_map.shape == (2000, 2)


def test_backbone_batch_resizes_with_pil_bicubic_then_crops_bottom_right():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (90, 160, 3), dtype=np.uint8))
    geometry = aspect_geometry(90, 160, 28, 14)
    batch = backbone_batch([image], [geometry], (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), torch.device("cpu"))
    assert batch.shape == (1, 3, 28, 42)
    expected = np.asarray(image.resize((49, 28), Image.Resampling.BICUBIC))[:28, :42] / 255.0
    np.testing.assert_allclose(batch[0].permute(1, 2, 0).numpy(), expected, atol=1e-6)


def test_dino_takes_any_multiple_of_the_patch():
    dino = DinoBackbone(load_config("tiny").dino)
    out = dino(torch.randn(1, 3, 224, 364))
    assert out.patch_tokens.shape == (1, 16 * 26, dino.width)


def test_high_bit_grey_is_scaled_by_its_real_bit_depth():
    mono12 = Image.fromarray(np.array([[0, 2048, 4095]], dtype=np.uint16))
    assert to_rgb_array(mono12, bit_depth=12)[0, :, 0].tolist() == [0, 128, 255]
    assert to_rgb_array(mono12)[0, :, 0].tolist() == [0, 8, 16]  # no bit depth known: a 16-bit full scale
    mono12.info[SIGNIFICANT_BITS_KEY] = 12  # the frame's own sBIT wins over the product's
    assert to_rgb_array(mono12, bit_depth=16)[0, :, 0].tolist() == [0, 128, 255]


def test_product_bit_depth_is_the_references_maximum_rounded_up():
    def grey(highest):
        return Image.fromarray(np.array([[0, highest]], dtype=np.uint16))

    assert bit_depth_of([grey(900)]) == 10
    assert bit_depth_of([grey(900), grey(3800)]) == 12
    assert bit_depth_of([grey(16000)]) == 14
    assert bit_depth_of([grey(65535)]) == 16
    assert bit_depth_of([Image.new("RGB", (2, 2))]) is None


def test_32_bit_integer_grey_beyond_16_bits_is_refused_not_clipped_white():
    fits = Image.fromarray(np.array([[0, 65535]], dtype=np.int32), mode="I")
    assert to_rgb_array(fits)[0, :, 0].tolist() == [0, 255]
    beyond = Image.fromarray(np.array([[0, 1 << 20]], dtype=np.int32), mode="I")
    with pytest.raises(ValueError, match=r"integer pixels \(mode I\) from 0 to 1048576, outside 0\.\.65535"):
        to_rgb_array(beyond)


def test_float_grey_is_read_within_0_1_or_0_255_and_refused_otherwise_never_clipped():
    def grey(*values: float) -> Image.Image:
        return Image.fromarray(np.array([values], dtype=np.float32))  # mode F

    assert to_rgb_array(grey(0.0, 0.5, 1.0))[0, :, 0].tolist() == [0, 128, 255]  # full scale 1
    assert to_rgb_array(grey(0.0, 127.5, 255.0))[0, :, 0].tolist() == [0, 128, 255]  # full scale 255
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NaN made numpy warn in a cast, then scored like black
        for values, detail in (
            ((0.0, 4095.0), "float pixels from 0 to 4095"),  # was clipped white above 255
            ((-0.25, 0.5), "float pixels from -0.25 to 0.5"),
            ((0.5, float("nan")), "NaN or infinity"),
            ((0.5, float("inf")), "NaN or infinity"),
        ):
            with pytest.raises(ValueError, match=detail) as refused:
                to_rgb_array(grey(*values))
            assert "convert the image to 8- or 16-bit integers" in str(refused.value)


def test_data_above_a_bit_depth_is_found():
    mono12 = Image.fromarray(np.array([[0, 4095]], dtype=np.uint16))
    assert above_bit_depth(mono12, 10) == 4095
    assert above_bit_depth(mono12, 12) is None and above_bit_depth(mono12, None) is None
    mono12.info[SIGNIFICANT_BITS_KEY] = 12  # its own sBIT scales it, not the product's bit depth
    assert above_bit_depth(mono12, 10) is None
    assert above_bit_depth(Image.new("L", (2, 2), 255), 8) is None


def test_empty_alpha_is_ignored_partial_alpha_is_composited():
    empty = Image.new("RGBA", (1, 1), (200, 100, 50, 0))
    assert to_rgb_array(empty).tolist() == [[[200, 100, 50]]]  # alpha is not a defect map
    partial = Image.fromarray(np.array([[[200, 100, 50, 0], [200, 100, 50, 255]]], dtype=np.uint8))
    assert to_rgb_array(partial).tolist() == [[[0, 0, 0], [200, 100, 50]]]
    assert to_rgb_array(Image.new("LA", (1, 1), (90, 0))).tolist() == [[[90, 90, 90]]]


def png_with_sbit(bits: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((2, 2), np.uint16)).save(buffer, format="PNG")
    data = buffer.getvalue()
    ihdr_end = 8 + 12 + 13
    return data[:ihdr_end] + chunk(b"sBIT", bytes([bits])) + data[ihdr_end:]


def test_png_sbit_is_read():
    assert png_significant_bits(png_with_sbit(12)) == 12
    assert Image.open(io.BytesIO(png_with_sbit(12))).size == (2, 2)  # still a valid PNG
    buffer = io.BytesIO()
    Image.new("L", (2, 2)).save(buffer, format="PNG")
    assert png_significant_bits(buffer.getvalue()) is None


def test_reduce_keeps_the_camera_size():
    big = Image.new("RGB", (5000, 4200))
    small = reduced(big, 2048)
    assert small.size == (2500, 2100) and frame_size(small) == (5000, 4200)
    assert small.info[FRAME_SIZE_KEY] == (5000, 4200)
    assert reduced(Image.new("RGB", (300, 200)), 2048).size == (300, 200)


@pytest.mark.parametrize("shape", [(37, 53), (5, 90), (200, 3)])
def test_gaussian_smoothing_equals_scipy(shape):
    values = np.random.default_rng(1).random(shape).astype(np.float32)
    ours = gaussian_smooth(torch.from_numpy(values)[None], 4.0)[0].numpy()
    np.testing.assert_allclose(ours, gaussian_filter(values, sigma=4), atol=1e-5)
