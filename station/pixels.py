"""GenICam pixel formats (PFNC numbers) to PNG bytes, the bit depth kept: Mono8 as 8-bit grey; Mono10/12/16 as
16-bit grey with an `sBIT` chunk saying how many bits are real (the service reads the frame at that depth);
RGB8/BGR8 as colour; 8-bit Bayer demosaiced to colour with OpenCV. Packed formats (Mono10p, Mono12Packed...) are
refused: the camera must be set to an unpacked one."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from station.camera import CameraFailed
from station.opencv import import_cv2

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class PixelFormat:
    """How one PFNC format is laid out: channels, bytes per sample, bits of real data, the Bayer conversion."""

    name: str
    channels: int
    sample_bytes: int
    bits: int
    bayer: str | None = None  # OpenCV's COLOR_Bayer..2BGR constant name


# PFNC numbers (GenICam Pixel Format Naming Convention), as the buffer reports them
PIXEL_FORMATS: dict[int, PixelFormat] = {
    0x01080001: PixelFormat("Mono8", 1, 1, 8),
    0x01100003: PixelFormat("Mono10", 1, 2, 10),
    0x01100005: PixelFormat("Mono12", 1, 2, 12),
    0x01100007: PixelFormat("Mono16", 1, 2, 16),
    0x02180014: PixelFormat("RGB8", 3, 1, 8),
    0x02180015: PixelFormat("BGR8", 3, 1, 8),
    # OpenCV names Bayer patterns by the second row's first two pixels: GenICam's BayerRG is OpenCV's BayerBG
    0x01080008: PixelFormat("BayerGR8", 1, 1, 8, "COLOR_BayerGB2BGR"),
    0x01080009: PixelFormat("BayerRG8", 1, 1, 8, "COLOR_BayerBG2BGR"),
    0x0108000A: PixelFormat("BayerGB8", 1, 1, 8, "COLOR_BayerGR2BGR"),
    0x0108000B: PixelFormat("BayerBG8", 1, 1, 8, "COLOR_BayerRG2BGR"),
}
PIXEL_FORMAT_NAMES = frozenset(f.name for f in PIXEL_FORMATS.values())


def pixel_array(data: bytes, width: int, height: int, pfnc: int) -> tuple[np.ndarray, PixelFormat]:
    """The buffer's pixels: (H, W) uint8/uint16 grey or (H, W, 3) uint8 BGR; raises CameraFailed for a format not
    in PIXEL_FORMATS or a buffer of the wrong size."""
    import numpy as np  # with OpenCV, only once a camera gives frames: the station starts without it

    fmt = PIXEL_FORMATS.get(pfnc)
    if fmt is None:
        names = ", ".join(sorted(PIXEL_FORMAT_NAMES))
        raise CameraFailed(f"pixel format 0x{pfnc:08x} is not supported: set the camera to one of {names}")
    expected = width * height * fmt.channels * fmt.sample_bytes
    if len(data) < expected:
        raise CameraFailed(f"{fmt.name} buffer of {len(data)} bytes, {width}x{height} needs {expected}")
    dtype = np.dtype("<u2") if fmt.sample_bytes == 2 else np.dtype(np.uint8)
    pixels = np.frombuffer(data, dtype=dtype, count=width * height * fmt.channels)
    shape = (height, width) if fmt.channels == 1 else (height, width, 3)
    pixels = pixels.reshape(shape)  # (H, W) grey or (H, W, 3) colour
    cv2 = import_cv2()
    if fmt.bayer:
        pixels = cv2.cvtColor(pixels, getattr(cv2, fmt.bayer))  # (H, W) -> (H, W, 3) BGR
    elif fmt.name == "RGB8":
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)  # OpenCV writes BGR
    return pixels.astype(np.uint16 if fmt.sample_bytes == 2 else np.uint8, copy=False), fmt


def encode_png(pixels: np.ndarray, bits: int) -> bytes:
    """PNG bytes of grey (H, W) or BGR (H, W, 3) pixels; 16-bit grey with `bits` < 16 gets an sBIT chunk."""
    cv2 = import_cv2()
    ok, png = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise CameraFailed("OpenCV could not encode the frame as PNG")
    data = png.tobytes()
    return with_sbit(data, bits) if pixels.dtype.itemsize == 2 and bits < 16 else data


def with_sbit(png: bytes, bits: int) -> bytes:
    """The PNG with an sBIT chunk (grey: one byte) right after its IHDR, which is 8 + 8 + 13 + 4 bytes in."""
    end_of_ihdr = 8 + 8 + 13 + 4
    body = bytes([bits])
    chunk = struct.pack(">I", len(body)) + b"sBIT" + body + struct.pack(">I", zlib.crc32(b"sBIT" + body))
    return png[:end_of_ihdr] + chunk + png[end_of_ihdr:]


def buffer_png(data: bytes, width: int, height: int, pfnc: int) -> tuple[bytes, str]:
    """(PNG bytes, pixel format name) of one camera buffer; raises CameraFailed (see pixel_array)."""
    pixels, fmt = pixel_array(data, width, height, pfnc)
    return encode_png(pixels, fmt.bits), fmt.name
