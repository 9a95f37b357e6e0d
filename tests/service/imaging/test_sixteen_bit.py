"""16-bit colour PNG/TIFF read exactly through OpenCV: channel order, every bit of each sample, alpha, the EXIF
orientation applied as Pillow applies it to 8-bit data, and OpenCV imported only when such a file arrives."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.errors import BadImage, UnsupportedImage
from service.imaging.decode import decode_image
from service.imaging.sixteen_bit import sixteen_bit_colour
from tests.helpers.images import sample_tiff

LIMIT = 60_000_000
REPO = Path(__file__).resolve().parents[3]


def asymmetric(height: int = 5, width: int = 7, channels: int = 3, seed: int = 0) -> np.ndarray:
    """(H, W, C) uint16 whose channels, and each sample's high and low bytes, all differ."""
    values = np.random.default_rng(seed).integers(0, 65536, (height, width, channels), dtype=np.uint16)
    values[0, 0, :3] = [0x1234, 0x5678, 0x9ABC][:channels]  # R != G != B, low byte != high byte
    return values


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png16(values: np.ndarray, before: bytes = b"", after: bytes = b"") -> bytes:
    """(H, W, C) uint16 -> a 16-bit PNG (C: 2 grey + alpha, 3 RGB, 4 RGBA), samples big-endian in R, G, B(, A)
    order as the PNG spec stores them; `before`/`after` are chunks placed before/after the pixel data."""
    height, width, channels = values.shape
    rows = values.astype(">u2").reshape(height, width * channels)
    raw = b"".join(b"\0" + row.tobytes() for row in rows)
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, {2: 4, 3: 2, 4: 6}[channels], 0, 0, 0))
    idat = chunk(b"IDAT", zlib.compress(raw))
    return b"\x89PNG\r\n\x1a\n" + header + before + idat + after + chunk(b"IEND", b"")


def retagged(tiff: bytes, tags: dict[int, int]) -> bytes:
    """`sample_tiff`'s file with SHORT entries set ({tag: value}); an added entry takes RowsPerStrip's place (an
    optional tag: one strip), so that no offset in the file moves."""
    (count,) = struct.unpack("<H", tiff[8:10])
    entries = {struct.unpack("<H", tiff[at : at + 2])[0]: tiff[at : at + 12] for at in range(10, 10 + 12 * count, 12)}
    entries.update({tag: struct.pack("<HHIHH", tag, 3, 1, value, 0) for tag, value in tags.items()})
    if len(entries) > count:
        del entries[278]
    return tiff[:10] + b"".join(entries[tag] for tag in sorted(entries)) + tiff[10 + 12 * count :]


def rgba_tiff(values: np.ndarray) -> bytes:
    """(H, W, 4) uint16 -> an uncompressed RGBA TIFF (PhotometricInterpretation RGB, ExtraSamples: unassociated)."""
    return retagged(sample_tiff(values), {262: 2, 338: 2})


def exif(orientation: int) -> bytes:
    """An eXIf chunk's body: a TIFF-structured EXIF block with only the Orientation tag."""
    block = Image.Exif()
    block[0x0112] = orientation
    return block.tobytes()[6:]  # without "Exif\0\0", as PNG stores it


@pytest.mark.parametrize("writer", [png16, sample_tiff], ids=["png", "tiff"])
def test_16_bit_rgb_keeps_channel_order_and_every_bit(writer):
    values = asymmetric()
    frame = decode_image(writer(values), "rgb48", LIMIT)
    assert frame.pixels.dtype == np.uint16 and frame.pixels.shape == (5, 7, 3)
    assert frame.pixels[0, 0].tolist() == [0x1234, 0x5678, 0x9ABC]  # RGB, not OpenCV's BGR
    np.testing.assert_array_equal(frame.pixels, values)


@pytest.mark.parametrize("writer", [png16, rgba_tiff], ids=["png", "tiff"])
def test_16_bit_rgba_is_composited_over_black_in_rgb_order(writer):
    values = asymmetric(channels=4)
    values[0, 0, 3] = 65535  # opaque: the colour as it is
    frame = decode_image(writer(values), "rgba64", LIMIT)
    expected = (values[..., :3].astype(np.uint64) * values[..., 3:] + 32767) // 65535  # (H, W, 3) over black
    assert frame.pixels[0, 0].tolist() == [0x1234, 0x5678, 0x9ABC]
    np.testing.assert_array_equal(frame.pixels, expected)


def test_16_bit_grey_with_alpha_is_its_grey_channel_over_black():
    values = asymmetric(channels=2)
    values[0, 0] = [0x1234, 65535]
    frame = decode_image(png16(values), "la16.png", LIMIT)
    expected = (values[..., 0].astype(np.uint64) * values[..., 1] + 32767) // 65535  # (H, W)
    assert frame.pixels.mode == "I;16" and np.asarray(frame.pixels)[0, 0] == 0x1234
    np.testing.assert_array_equal(np.asarray(frame.pixels), expected)


def test_a_png_transparent_colour_is_ignored_as_in_8_bit_rgb():
    values = asymmetric()
    transparent = chunk(b"tRNS", struct.pack(">3H", *values[0, 0].tolist()))  # OpenCV reads it as an alpha channel
    np.testing.assert_array_equal(decode_image(png16(values, before=transparent), "trns.png", LIMIT).pixels, values)


def eight_bit_png(values: np.ndarray, orientation: int) -> bytes:
    """The high bytes of (H, W, 3) uint16 as an 8-bit RGB PNG with the same EXIF orientation, written by Pillow."""
    buffer = io.BytesIO()
    Image.fromarray((values >> 8).astype(np.uint8)).save(buffer, format="PNG", exif=b"Exif\0\0" + exif(orientation))
    return buffer.getvalue()


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("where", ["png-before-pixels", "png-after-pixels", "tiff"])
def test_16_bit_colour_is_oriented_as_pillow_orients_8_bit_data(orientation, where):
    values = asymmetric(height=5, width=7)
    if where == "tiff":
        data = retagged(sample_tiff(values), {0x0112: orientation})
    else:
        placed = chunk(b"eXIf", exif(orientation))
        data = png16(values, **({"before": placed} if where == "png-before-pixels" else {"after": placed}))
    frame = decode_image(data, "rgb48", LIMIT)
    oracle = decode_image(eight_bit_png(values, orientation), "rgb24.png", LIMIT)  # Pillow's exif_transpose
    assert frame.camera_size == oracle.camera_size == ((5, 7) if orientation >= 5 else (7, 5))
    np.testing.assert_array_equal(frame.pixels >> 8, np.asarray(oracle.pixels))
    assert frame.pixels.flags.c_contiguous


@pytest.mark.parametrize("orientation", [2, 6, 7])
def test_a_tiff_is_turned_once_whatever_pillow_reports(orientation):
    """OpenCV applies a TIFF's Orientation tag itself; a Pillow that leaves the tag after loading (before 13) still
    reports it, and it must not be applied a second time."""
    values = asymmetric()
    data = retagged(sample_tiff(values), {0x0112: orientation})
    displayed = decode_image(data, "rgb48.tif", LIMIT)
    again = sixteen_bit_colour(data, "TIFF", "RGB", displayed.camera_size, orientation)
    np.testing.assert_array_equal(again, displayed.pixels)


@pytest.mark.parametrize("writer", [png16, sample_tiff], ids=["png", "tiff"])
def test_a_cut_16_bit_colour_file_is_a_bad_image(writer):
    data = writer(asymmetric(height=40, width=48))
    with pytest.raises(BadImage, match="does not decode"):
        decode_image(data[: len(data) * 3 // 4], "cut", LIMIT)


@pytest.mark.parametrize(
    ("tiff", "layout"),
    [
        (lambda values: retagged(sample_tiff(values), {284: 2}), "separate colour planes"),
        (lambda values: retagged(sample_tiff(np.dstack([values, values[..., :1]])), {262: 2, 338: 1}), "premultiplied"),
    ],
    ids=["planar", "premultiplied"],
)
def test_16_bit_colour_tiff_layouts_that_would_lose_bits_are_refused(tiff, layout):
    """Neither Pillow (8 of 16 bits) nor OpenCV (planes read as interleaved, alpha applied twice) reads these
    exactly: refused naming the layout, never decoded into other values."""
    with pytest.raises(UnsupportedImage, match=layout):
        decode_image(tiff(asymmetric()), "planes.tif", LIMIT)


def test_16_bit_colour_that_opencv_does_not_read_is_a_bad_image(monkeypatch):
    cv2 = pytest.importorskip("cv2")
    monkeypatch.setattr(cv2, "imdecode", lambda *args: None)
    with pytest.raises(BadImage, match=r"rgb48\.png: this PNG file does not decode .*OpenCV did not read"):
        decode_image(png16(asymmetric()), "rgb48.png", LIMIT)
    monkeypatch.setattr(cv2, "imdecode", lambda *args: np.zeros((5, 7, 3), np.uint8))  # 8-bit: not exact
    with pytest.raises(BadImage, match="OpenCV did not read its 16-bit samples"):
        decode_image(sample_tiff(asymmetric()), "rgb48.tif", LIMIT)
    monkeypatch.setattr(cv2, "imdecode", lambda *args: np.zeros((7, 5, 3), np.uint16))  # another size
    with pytest.raises(BadImage, match="OpenCV read 5 x 7 pixels, not 7 x 5"):
        decode_image(sample_tiff(asymmetric()), "rgb48.tif", LIMIT)


LAZY = """
import sys
import numpy as np
from service.imaging.decode import decode_image
from service.imaging.sixteen_bit import sixteen_bit_colour
from tests.helpers.images import image_bytes, sample_tiff
decode_image(image_bytes(8, 8), "rgb.png", 10**6)
decode_image(sample_tiff(np.full((4, 4), 3000, np.uint16)), "grey16.tif", 10**6)
print("cv2" in sys.modules)
decode_image(sample_tiff(np.full((4, 4, 3), 3000, np.uint16)), "rgb48.tif", 10**6)
print("cv2" in sys.modules)
"""


def test_opencv_is_imported_only_when_16_bit_colour_arrives():
    run = subprocess.run([sys.executable, "-c", LAZY], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["False", "True"]
