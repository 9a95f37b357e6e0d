"""Pixel values as the backbones read them: the real bit depth of high-bit grey, refusals instead of clipping,
alpha; a product's bit depth from its references (Frames)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from model import Frame, to_rgb_array
from model.frame import bit_depth_of


def test_high_bit_grey_is_scaled_by_its_real_bit_depth():
    mono12 = Image.fromarray(np.array([[0, 2048, 4095]], dtype=np.uint16))
    assert to_rgb_array(mono12, bits=12)[0, :, 0].tolist() == [0, 128, 255]
    assert to_rgb_array(mono12)[0, :, 0].tolist() == [0, 8, 16]  # no bit depth known: a 16-bit full scale
    with_sbit = Frame(mono12, significant_bits=12)  # the frame's own sBIT wins over the product's
    assert np.asarray(with_sbit.rgb(bit_depth=16))[0, :, 0].tolist() == [0, 128, 255]


def test_product_bit_depth_is_the_references_maximum_rounded_up():
    def grey(highest):
        return Frame(Image.fromarray(np.array([[0, highest]], dtype=np.uint16)))

    assert bit_depth_of([grey(900)]) == 10
    assert bit_depth_of([grey(900), grey(3800)]) == 12
    assert bit_depth_of([grey(16000)]) == 14
    assert bit_depth_of([grey(65535)]) == 16
    assert bit_depth_of([Frame(Image.new("RGB", (2, 2)))]) is None
    declared = Frame(Image.fromarray(np.array([[0, 900]], dtype=np.uint16)), significant_bits=12)
    assert bit_depth_of([declared]) == 12  # every high-bit reference declares its sBIT: that wins


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
            ((0.0, 4095.0), "float pixels from 0 to 4095"),  # clipping would make it white above 255
            ((-0.25, 0.5), "float pixels from -0.25 to 0.5"),
            ((0.5, float("nan")), "NaN or infinity"),
            ((0.5, float("inf")), "NaN or infinity"),
        ):
            with pytest.raises(ValueError, match=detail) as refused:
                to_rgb_array(grey(*values))
            assert "convert the image to 8- or 16-bit integers" in str(refused.value)


def test_data_above_a_bit_depth_is_found():
    mono12 = Image.fromarray(np.array([[0, 4095]], dtype=np.uint16))
    assert Frame(mono12).above_bit_depth(10) == 4095
    assert Frame(mono12).above_bit_depth(12) is None and Frame(mono12).above_bit_depth(None) is None
    assert Frame(mono12, significant_bits=12).above_bit_depth(10) is None  # its own sBIT scales it
    assert Frame(Image.new("L", (2, 2), 255)).above_bit_depth(8) is None


def test_empty_alpha_is_ignored_partial_alpha_is_composited():
    empty = Image.new("RGBA", (1, 1), (200, 100, 50, 0))
    assert to_rgb_array(empty).tolist() == [[[200, 100, 50]]]  # alpha is not a defect map
    partial = Image.fromarray(np.array([[[200, 100, 50, 0], [200, 100, 50, 255]]], dtype=np.uint8))
    assert to_rgb_array(partial).tolist() == [[[0, 0, 0], [200, 100, 50]]]
    assert to_rgb_array(Image.new("LA", (1, 1), (90, 0))).tolist() == [[[90, 90, 90]]]
