"""GenICam buffers to PNG: the bit depth kept (16-bit grey with sBIT), colour orders and Bayer patterns right."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from station.camera import CameraFailed
from station.pixels import buffer_png

MONO10, MONO12, MONO16, RGB8, BGR8 = 0x01100003, 0x01100005, 0x01100007, 0x02180014, 0x02180015
BAYER = {"BayerRG8": 0x01080009, "BayerGR8": 0x01080008, "BayerGB8": 0x0108000A, "BayerBG8": 0x0108000B}


def decoded(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def sbit(png: bytes) -> int | None:
    at = png.find(b"sBIT")
    return png[at + 4] if at >= 0 else None


@pytest.mark.parametrize("pfnc, bits", [(MONO10, 10), (MONO12, 12)])
def test_high_bit_mono_is_sixteen_bit_grey_with_its_depth_in_sbit(pfnc, bits):
    values = np.array([[0, 1, 2**bits - 1, 2 ** (bits - 1)]], dtype="<u2")  # (1, 4) in 16-bit containers
    png, _ = buffer_png(values.tobytes(), 4, 1, pfnc)
    assert sbit(png) == bits
    assert decoded(png).dtype == np.uint16 and decoded(png).tolist() == values.tolist()  # not rescaled


def test_mono16_has_no_sbit_and_mono8_stays_eight_bit():
    png16, _ = buffer_png(np.array([[65535, 3]], dtype="<u2").tobytes(), 2, 1, MONO16)
    png8, name = buffer_png(bytes([0, 255]), 2, 1, 0x01080001)
    assert sbit(png16) is None and decoded(png16).tolist() == [[65535, 3]]
    assert name == "Mono8" and decoded(png8).dtype == np.uint8 and decoded(png8).tolist() == [[0, 255]]


@pytest.mark.parametrize("pfnc", [RGB8, BGR8])
def test_colour_orders_come_out_as_rgb(pfnc):
    red = [255, 0, 0] if pfnc == RGB8 else [0, 0, 255]  # red in the camera's channel order
    png, _ = buffer_png(bytes(red * 4), 2, 2, pfnc)
    assert decoded(png).reshape(-1, 3).tolist() == [[255, 0, 0]] * 4


def mosaic(pattern: str, rgb: tuple[int, int, int], size: int = 8) -> bytes:
    """A uniform colour as a Bayer sensor of `pattern` (BayerRG8: R G / G B ...) records it."""
    first_row, second_row = pattern[5:7], {"RG": "GB", "GR": "BG", "GB": "RG", "BG": "GR"}[pattern[5:7]]
    value = {"R": rgb[0], "G": rgb[1], "B": rgb[2]}
    rows = [[value[(first_row if y % 2 == 0 else second_row)[x % 2]] for x in range(size)] for y in range(size)]
    return np.array(rows, dtype=np.uint8).tobytes()


@pytest.mark.parametrize("pattern", sorted(BAYER))
def test_bayer_is_demosaiced_to_the_right_colours(pattern):
    colour = (200, 120, 30)
    png, name = buffer_png(mosaic(pattern, colour), 8, 8, BAYER[pattern])
    middle = decoded(png)[2:6, 2:6].reshape(-1, 3)  # away from the borders' interpolation
    assert name == pattern and np.abs(middle.astype(int) - colour).max() <= 2


def test_packed_or_unknown_formats_and_short_buffers_are_refused():
    with pytest.raises(CameraFailed, match="0x010a0046 is not supported"):
        buffer_png(bytes(10), 4, 2, 0x010A0046)  # Mono10p
    with pytest.raises(CameraFailed, match="needs 8"):
        buffer_png(bytes(7), 4, 2, 0x01080001)
