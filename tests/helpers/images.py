"""The one image factory: encoded test images (textured parts, noise, TIFFs of any sample format, decompression
bombs), procedural parts with pasted defects for the model, and PNG decoding for answers."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
from PIL import Image


def image_bytes(
    width: int = 48, height: int = 40, seed: int = 0, fmt: str = "PNG", mode: str = "RGB", defect: bool = False
) -> bytes:
    """A small textured image (the same texture for every seed-0 image); `defect` paints a bright square."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = (np.sin(xx / 3.0) + np.cos(yy / 4.0)) * 40 + 128  # (H, W)
    pixels = np.stack([base, base * 0.9, base * 0.8], axis=-1) + rng.normal(0, 4, (height, width, 3))
    if defect:
        pixels[height // 4 : height // 2, width // 4 : width // 2] = [255, 0, 255]
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    if mode != "RGB":
        image = image.convert(mode)
    return encoded(image, fmt)


def noise_image(width: int, height: int, seed: int = 0, fmt: str = "PNG") -> bytes:
    """Uniform RGB noise: large frames whose decoding, forward and map encoding all take real time."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)  # (H, W, 3)
    return encoded(Image.fromarray(pixels), fmt)


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    """A PIL image as file bytes (PNG at compression level 1: fast for large test frames)."""
    buffer = io.BytesIO()
    options = {"compress_level": 1} if fmt == "PNG" else {}
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def decoded(data: bytes) -> Image.Image:
    """File bytes as a PIL image, converted to RGB."""
    return Image.open(io.BytesIO(data)).convert("RGB")


def decode_png(b64_or_bytes: str | bytes) -> np.ndarray:
    """A PNG (base64 text, as JSON answers carry it, or bytes) as a numpy array."""
    data = base64.b64decode(b64_or_bytes) if isinstance(b64_or_bytes, str) else b64_or_bytes
    return np.asarray(Image.open(io.BytesIO(data)))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with almost no pixel data (a decompression bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def sample_tiff(pixels: np.ndarray) -> bytes:
    """(H, W) or (H, W, S) array -> an uncompressed little-endian one-strip TIFF with the array's own sample format
    (BitsPerSample, SampleFormat: unsigned, signed, float), which Pillow cannot write for int16, uint32, float64
    or float RGB."""
    pixels = np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("<"))
    height, width = pixels.shape[:2]
    samples = 1 if pixels.ndim == 2 else pixels.shape[2]
    bits = struct.pack(f"<{samples}H", *[pixels.dtype.itemsize * 8] * samples)  # BitsPerSample, one per sample
    kinds = struct.pack(f"<{samples}H", *[{"u": 1, "i": 2, "f": 3}[pixels.dtype.kind]] * samples)  # SampleFormat
    values_at = 8 + 2 + 11 * 12 + 4  # the per-sample lists follow the 11-entry directory, then the pixels

    def shorts(data: bytes, offset: int) -> bytes:  # a SHORT list: in the entry when it fits, else its offset
        return data.ljust(4, b"\0") if len(data) <= 4 else struct.pack("<I", offset)

    tags = [  # (tag, type 3 SHORT / 4 LONG, count, the entry's 4 value bytes), in tag order
        (256, 4, 1, struct.pack("<I", width)),
        (257, 4, 1, struct.pack("<I", height)),
        (258, 3, samples, shorts(bits, values_at)),
        (259, 3, 1, struct.pack("<HH", 1, 0)),  # no compression
        (262, 3, 1, struct.pack("<HH", 2 if samples == 3 else 1, 0)),  # RGB, else black is zero
        (273, 4, 1, struct.pack("<I", values_at + 2 * len(bits))),  # the strip's offset
        (277, 3, 1, struct.pack("<HH", samples, 0)),
        (278, 4, 1, struct.pack("<I", height)),
        (279, 4, 1, struct.pack("<I", pixels.nbytes)),
        (284, 3, 1, struct.pack("<HH", 1, 0)),  # samples interleaved
        (339, 3, samples, shorts(kinds, values_at + len(bits))),
    ]
    directory = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHI", *tag[:3]) + tag[3] for tag in tags)
    return b"II*\0" + struct.pack("<I", 8) + directory + b"\0" * 4 + bits + kinds + pixels.tobytes()


def textured_part(seed: int, size: int = 224) -> np.ndarray:
    """A striped, lightly noisy 'part' (H, W, 3) uint8; each seed a slightly different normal instance."""
    rng = np.random.default_rng(seed)
    _, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    phase = rng.uniform(0, 0.5)
    stripes = 0.5 + 0.35 * np.sin(2 * np.pi * (xx / 16.0 + phase))
    base = stripes[..., None] * np.array([0.8, 0.7, 0.6], dtype=np.float32)
    noisy = base + rng.normal(0, 0.02, size=base.shape)
    return (np.clip(noisy, 0, 1) * 255).astype(np.uint8)


def with_defect(image: np.ndarray, top: int, left: int, side: int, seed: int = 123) -> tuple[np.ndarray, np.ndarray]:
    """Paste a high-contrast checkerboard square; returns the image and its exact bool mask."""
    rng = np.random.default_rng(seed)
    out = image.copy()
    yy, xx = np.mgrid[0:side, 0:side]
    checker = (((yy // 4) + (xx // 4)) % 2).astype(np.float32)
    colour = rng.uniform(0.2, 1.0, size=3)
    out[top : top + side, left : left + side] = (checker[..., None] * colour * 255).astype(np.uint8)
    mask = np.zeros(image.shape[:2], dtype=bool)
    mask[top : top + side, left : left + side] = True
    return out, mask


def pil(array: np.ndarray) -> Image.Image:
    """A numpy image as a PIL image."""
    return Image.fromarray(array)
