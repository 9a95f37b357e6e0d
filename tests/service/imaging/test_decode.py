"""Decoding details: a PNG's sBIT, large frames reduced at decode with their camera size kept, large JPEGs decoded
reduced by DCT scaling to the same size and nearly the same pixels as a full decode then box reduction."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps, JpegImagePlugin

from service.imaging.decode import EXIF_ORIENTATION, decode_image, png_significant_bits, reduced, reduced_size
from tests.helpers.images import encoded


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
    assert reduced(Image.new("RGB", (5000, 4200)), 2048).size == (2500, 2100)
    assert reduced(Image.new("RGB", (300, 200)), 2048).size == (300, 200)
    frame = decode_image(encoded(Image.new("RGB", (5000, 4200)), "BMP"), "big.bmp", 10**8)
    assert frame.pixels.size == (2500, 2100) and frame.camera_size == (5000, 4200)


def test_reduced_size_keeps_the_shorter_side_at_least_the_decode_size():
    assert reduced_size((5000, 4200), 2048) == (2500, 2100)
    assert reduced_size((6300, 6150), 2048) == (2100, 2050)  # a factor of 3: no DCT scale alone reaches it
    assert reduced_size((4095, 5000), 2048) == (4095, 5000)
    assert reduced_size((512, 512), 2048) == (512, 512)


def large_jpeg(size: tuple[int, int], orientation: int = 1) -> bytes:
    """A smooth W x H photo-like JPEG (quality 90) with an EXIF orientation."""
    rng = np.random.default_rng(0)
    coarse = Image.fromarray(rng.integers(0, 256, (size[1] // 64, size[0] // 64, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    buffer = io.BytesIO()
    coarse.resize(size, Image.Resampling.BICUBIC).save(buffer, format="JPEG", quality=90, exif=exif.tobytes())
    return buffer.getvalue()


def fully_decoded(data: bytes) -> Image.Image:
    """The JPEG decoded at its full size by Pillow, as displayed (EXIF orientation applied), in RGB."""
    return ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")


@pytest.fixture
def drafts(monkeypatch) -> list[int]:
    """The DCT scale (2, 4 or 8; 1 = none) of every JPEG draft Pillow is asked for."""
    scales: list[int] = []
    original = JpegImagePlugin.JpegImageFile.draft

    def recorded(image, mode, size):
        answer = original(image, mode, size)
        scales.append(image.decoderconfig[0])
        return answer

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", recorded)
    return scales


@pytest.mark.parametrize(
    ("size", "orientation", "scale", "reduced_to"),
    [
        ((4800, 4200), 1, 2, (2400, 2100)),
        ((4800, 4200), 6, 2, (2100, 2400)),  # a quarter turn: the frame as displayed
        ((6300, 6150), 1, 2, (2100, 2050)),  # DCT scaling by 2, then a box resize by 1.5
    ],
)
def test_a_large_jpeg_is_dct_scaled_to_the_box_reductions_size_and_pixels(drafts, size, orientation, scale, reduced_to):
    data = large_jpeg(size, orientation)
    frame = decode_image(data, "big.jpg", 10**8)
    assert drafts == [scale]  # DCT scaling was used
    full = reduced(fully_decoded(data))  # the same frame decoded in full, then box-reduced
    assert frame.pixels.size == full.size == reduced_to
    assert frame.camera_size == (size if orientation == 1 else size[::-1])
    difference = np.abs(np.asarray(frame.pixels, dtype=int) - np.asarray(full, dtype=int))  # (H, W, 3)
    assert difference.mean() < 1.5 and np.percentile(difference, 99) <= 4


def test_a_jpeg_that_needs_all_its_pixels_is_not_dct_scaled(drafts):
    frame = decode_image(large_jpeg((4000, 3000)), "camera.jpg", 10**8)
    assert drafts == [] and frame.pixels.size == (4000, 3000)
    assert decode_image(encoded(Image.new("RGB", (512, 512)), "JPEG"), "small.jpg", 10**8).pixels.size == (512, 512)
    assert drafts == []
