"""Anomaly maps and frames -> pictures for clients: the mask and heat-map PNGs, and JPEG thumbnails."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
from PIL import Image

from model import Frame

HEATMAP_SPAN = 2.0  # heat map: 0 -> 0, the mask threshold -> 128, HEATMAP_SPAN x the threshold or more -> 255
PNG_COMPRESS_LEVEL = 1  # fast; masks and maps compress well anyway
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_FILTER_NONE, PNG_FILTER_UP = 0, 2
THUMBNAIL_SIDE = 160  # longer side, px
THUMBNAIL_QUALITY = 70


def encode_png(array: np.ndarray) -> bytes:
    """(H, W) uint8 -> 8-bit greyscale PNG bytes (PNG spec: IHDR, one IDAT, IEND; every row "Up"-filtered).

    Written directly with zlib: Pillow tries all five row filters on every row, which made a 512 x 512 mask
    ~30x slower to encode; the Up filter turns the runs of a mask or a smooth heat map into zeros, and zlib's
    run-length strategy (Z_RLE) codes those runs ~20 % faster and ~25 % smaller than its default matching
    (512 x 512 heat map: 1.1 vs 1.4 ms, 36 vs 48 kB; mask 2.4 vs 4.9 kB).
    """
    height, width = array.shape
    rows = np.empty((height, width + 1), dtype=np.uint8)  # (H, 1 + W): filter byte, then the filtered row
    rows[:, 0] = PNG_FILTER_UP
    rows[0, 0] = PNG_FILTER_NONE  # the first row has no row above it
    rows[0, 1:] = array[0]
    np.subtract(array[1:], array[:-1], out=rows[1:, 1:])  # uint8 arithmetic wraps modulo 256, as PNG's Up filter
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8 bit, greyscale, deflate, no interlace
    deflate = zlib.compressobj(PNG_COMPRESS_LEVEL, zlib.DEFLATED, zlib.MAX_WBITS, 8, zlib.Z_RLE)
    idat = deflate.compress(rows.tobytes()) + deflate.flush()
    return PNG_SIGNATURE + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def mask_png(anomaly_map: np.ndarray, pixel_threshold: float) -> bytes:
    """Binary mask PNG at the map's size: 255 where the map is above the pixel threshold, else 0."""
    return encode_png(np.where(anomaly_map > pixel_threshold, 255, 0).astype(np.uint8))  # (H, W)


def heatmap_png(anomaly_map: np.ndarray, pixel_threshold: float) -> bytes:
    """8-bit heat map PNG with a fixed normalisation relative to the pixel threshold (see HEATMAP_SPAN)."""
    scale = HEATMAP_SPAN * max(pixel_threshold, 1e-6)
    levels = np.clip(anomaly_map / scale, 0.0, 1.0) * 255.0  # (H, W)
    return encode_png(np.rint(levels).astype(np.uint8))


def thumbnail_data_url(frame: Frame, bit_depth: int | None = None) -> str:
    """A JPEG data URL of the frame, its longer side at most THUMBNAIL_SIDE px. High-bit grey frames are
    scaled as the model sees them (its sBIT, else the product's `bit_depth`)."""
    small = frame.rgb(bit_depth).copy()
    # reducing_gap=1: box-reduce by the largest whole factor first, then bicubic; ~3x faster than Pillow's
    # default gap of 2 on a 512 px frame, within one grey level on average
    small.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.BICUBIC, reducing_gap=1.0)
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=THUMBNAIL_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
