"""16-bit colour files (RGB48, RGBA64 and 16-bit grey + alpha PNG/TIFF) read exactly, with OpenCV.

Pillow reads these as 8-bit RGB(A), keeping each sample's high byte only (12-bit data would become 0..15).
OpenCV's `imdecode(..., IMREAD_UNCHANGED)` gives the samples as stored, in BGR(A) order; it applies a TIFF's
Orientation tag itself (its TIFF reader does, whatever the flags) but not a PNG's eXIf orientation. Pillow still
opens and checks the file (format, pixel limits, sBIT, EXIF orientation: see `service.imaging.decode`); only the
samples come from OpenCV, imported on the first such file so that start-up does not pay for it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from model import Pixels

# the file's channels -> their indices in OpenCV's reading: BGR(A); 16-bit grey + alpha comes as BGRA (grey 3x)
OPENCV_ORDER = {"RGB": [2, 1, 0], "RGBA": [2, 1, 0, 3], "LA": [0, -1]}
# EXIF orientation -> the array operation of the Image.Transpose method Pillow's `ImageOps.exif_transpose` uses
TRANSPOSES: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda values: values[:, ::-1],  # FLIP_LEFT_RIGHT
    3: lambda values: values[::-1, ::-1],  # ROTATE_180
    4: lambda values: values[::-1],  # FLIP_TOP_BOTTOM
    5: lambda values: values.swapaxes(0, 1),  # TRANSPOSE
    6: lambda values: np.rot90(values, -1),  # ROTATE_270 (counter-clockwise): a quarter turn clockwise
    7: lambda values: values[::-1, ::-1].swapaxes(0, 1),  # TRANSVERSE
    8: lambda values: np.rot90(values),  # ROTATE_90 (counter-clockwise)
}


def sixteen_bit_colour(
    data: bytes, file_format: str, channels: str, size: tuple[int, int], orientation: int = 1
) -> Pixels:
    """A 16-bit colour PNG or TIFF's exact pixels, as displayed: its EXIF `orientation` applied as Pillow applies
    it to 8-bit data.

    `channels` is what the file stores: "RGB", "RGBA" or "LA" (grey + alpha); `size` the (width, height) as
    displayed. Returns colour as an (H, W, 3) uint16 array in RGB order, grey as an "I;16" image. An alpha channel
    is treated as in 8-bit data: ignored when zero everywhere, else composited over black. Raises ValueError when
    OpenCV does not read the file as 16-bit samples of that size.
    """
    samples = _samples(data, channels)  # (H, W, C) as OpenCV gives them
    turn = TRANSPOSES.get(orientation) if file_format == "PNG" else None  # OpenCV turned a TIFF already
    values = turn(samples) if turn else samples  # (H', W', C), a view
    if values.shape[1::-1] != size:
        raise ValueError(f"OpenCV read {values.shape[1]} x {values.shape[0]} pixels, not {size[0]} x {size[1]}")
    if channels in ("RGBA", "LA"):
        values = _over_black(values)
    if channels == "LA":
        return Image.fromarray(np.ascontiguousarray(values[..., 0]))  # (H, W) -> "I;16"
    return np.ascontiguousarray(values)  # (H, W, 3) uint16


def _samples(data: bytes, channels: str) -> np.ndarray:
    """(H, W, len(channels)) uint16 in the order of `channels`."""
    import cv2  # here: only 16-bit colour files need OpenCV

    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)  # (H, W, 3 or 4) BGR(A) uint16
    if decoded is None or decoded.dtype != np.uint16 or decoded.ndim != 3:
        got = "nothing" if decoded is None else f"{decoded.dtype} {decoded.shape}"
        raise ValueError(f"OpenCV did not read its 16-bit samples (got {got})")
    # a 4th channel beyond RGB (a PNG tRNS colour, a TIFF's unspecified extra sample) is dropped, as Pillow does
    return decoded[..., OPENCV_ORDER[channels]]  # (H, W, C) a copy in RGB(A) / grey-alpha order


def _over_black(values: np.ndarray) -> np.ndarray:
    """16-bit colour and alpha (its last channel) -> the colour, composited over black unless alpha is all zero."""
    colour, alpha = values[..., :-1], values[..., -1:]
    if not alpha.any():  # an empty alpha channel is an export artefact, not a defect map
        return colour
    return ((colour.astype(np.uint32) * alpha + 32767) // 65535).astype(np.uint16)
