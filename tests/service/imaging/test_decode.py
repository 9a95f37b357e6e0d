"""Decoding details: a PNG's sBIT, large frames reduced at decode with their camera size kept."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

from service.imaging.decode import decode_image, png_significant_bits, reduced
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
