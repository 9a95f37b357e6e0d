"""Upload decoding (formats, limits, broken files) and PNG encoding of masks and heat maps."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from service.errors import BadImage, TooLarge, UnsupportedImage
from service.imaging.decode import decode_image
from service.imaging.encode import encode_png, heatmap_png, mask_png
from tests.helpers.images import decode_png, image_bytes

LIMIT = 10_000_000


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with almost no pixel data (a decompression bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "TIFF"])
def test_accepted_formats_decode_to_rgb_at_their_size(fmt):
    image = decode_image(image_bytes(37, 23, fmt=fmt), "x", LIMIT).pixels
    assert image.mode == "RGB"
    assert image.size == (37, 23)


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16"])
def test_other_pixel_modes_are_converted(mode):
    buffer = io.BytesIO()
    array = (np.arange(30 * 20).reshape(20, 30) * 100).astype(np.uint16 if mode == "I;16" else np.uint8)
    source = Image.fromarray(array) if mode == "I;16" else Image.fromarray(array).convert(mode)
    assert source.mode == mode
    source.save(buffer, format="PNG")
    image = decode_image(buffer.getvalue(), "x", LIMIT).pixels
    assert image.mode == ("I;16" if mode == "I;16" else "RGB")  # 16-bit stays 16-bit for the product's bit depth
    assert image.size == (30, 20)


def test_decompression_bomb_is_refused_before_decoding():
    with pytest.raises(TooLarge, match="5000 x 5000"):
        decode_image(png_header_only(5000, 5000), "bomb.png", LIMIT)


def bmp_header_only(width: int, height: int) -> bytes:
    """A 24-bit BMP whose header claims width x height pixels, with no pixel data."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 0, 0, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info), 0, 0, 14 + len(info)) + info


@pytest.mark.parametrize("header_only", [png_header_only, bmp_header_only])
def test_bomb_beyond_pillows_own_limit_names_the_services_limit(header_only):
    with pytest.raises(TooLarge) as refused:
        decode_image(header_only(100_000, 100_000), "bomb", LIMIT)
    message = str(refused.value)
    assert "10000000000 pixels, more than the limit of 10000000 (DCPSFR_MAX_PIXELS)" in message
    assert "refused before decoding" in message
    assert str(2 * Image.MAX_IMAGE_PIXELS) not in message  # Pillow's own limit is not the one to change


def test_pixel_limit_counts_width_times_height():
    data = image_bytes(40, 30)
    assert decode_image(data, "x", 40 * 30).camera_size == (40, 30)
    with pytest.raises(TooLarge, match="DCPSFR_MAX_PIXELS"):
        decode_image(data, "x", 40 * 30 - 1)


def test_not_an_image_is_unsupported_media():
    with pytest.raises(UnsupportedImage, match="not an image"):
        decode_image(b"%PDF-1.4 definitely not pixels", "doc.pdf", LIMIT)


def test_gif_is_a_refused_format():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="GIF")
    with pytest.raises(UnsupportedImage, match="GIF"):
        decode_image(buffer.getvalue(), "anim.gif", LIMIT)


def test_truncated_file_is_a_bad_image():
    data = image_bytes(64, 64)
    with pytest.raises(BadImage, match="does not decode"):
        decode_image(data[: len(data) // 2], "cut.png", LIMIT)


def test_empty_file_is_a_bad_image():
    with pytest.raises(BadImage, match="empty"):
        decode_image(b"", "empty.png", LIMIT)


def test_mask_is_binary_at_the_map_size():
    anomaly_map = np.zeros((7, 9), np.float32)
    anomaly_map[2:4, 3:6] = 0.8
    mask = decode_png(mask_png(anomaly_map, pixel_threshold=0.5))
    assert mask.shape == (7, 9)
    assert set(np.unique(mask)) == {0, 255}
    np.testing.assert_array_equal(mask == 255, anomaly_map > 0.5)


def test_heatmap_normalisation_is_fixed_relative_to_the_pixel_threshold():
    anomaly_map = np.array([[0.0, 0.25, 0.5, 1.0, 3.0]], np.float32)
    heat = decode_png(heatmap_png(anomaly_map, pixel_threshold=0.5))
    assert heat.dtype == np.uint8
    assert heat.tolist() == [[0, 64, 128, 255, 255]]


@pytest.mark.parametrize("shape", [(1, 1), (1, 17), (23, 1), (64, 48), (512, 512)])
def test_encoded_png_decodes_to_the_same_pixels_in_pillow_and_opencv(shape):
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    smooth = np.cumsum(rng.integers(0, 3, shape), axis=0).astype(np.uint8)  # wraps: exercises the Up filter
    for array in (smooth, rng.integers(0, 256, shape, dtype=np.uint8), np.where(smooth > 40, 255, 0).astype(np.uint8)):
        data = encode_png(array)
        with Image.open(io.BytesIO(data)) as image:
            assert image.mode == "L" and image.size == (shape[1], shape[0])
            np.testing.assert_array_equal(np.asarray(image), array)
        np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED), array)
