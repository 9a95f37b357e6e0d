"""Uploaded bytes -> checked, decoded RGB images; anomaly maps -> mask and heat-map PNGs.

Decoding order: identify the format from the header, refuse formats we do not accept (415) and images over
the pixel limit (413) before any pixel is decoded (decompression bombs), then decode (400 if that fails).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from model.preprocess import to_rgb_array
from service.errors import BadImage, PayloadTooLarge, UnsupportedMedia

ACCEPTED_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "BMP": "BMP", "TIFF": "TIFF"}
HEATMAP_SPAN = 2.0  # heat map: 0 -> 0, the mask threshold -> 128, HEATMAP_SPAN x the threshold or more -> 255
PNG_COMPRESS_LEVEL = 1  # fast; masks and maps compress well anyway


def decode_image(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """One uploaded file -> an RGB PIL image at its own size, or an ApiError that says what is wrong."""
    if not data:
        raise BadImage(f"{name}: the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies below
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise UnsupportedMedia(f"{name}: not an image (accepted formats: PNG, JPEG, BMP, TIFF)") from None
    except Image.DecompressionBombError as err:
        raise PayloadTooLarge(f"{name}: refused before decoding: {err} (DCPSFR_MAX_PIXELS={max_pixels})") from None
    if image.format not in ACCEPTED_FORMATS:
        raise UnsupportedMedia(f"{name}: {image.format} images are not accepted (use PNG, JPEG, BMP or TIFF)")
    width, height = image.size
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"{name}: {width} x {height} = {width * height} pixels, more than the limit of {max_pixels} "
            "(DCPSFR_MAX_PIXELS)"
        )
    try:
        image.load()
        rgb = to_rgb_array(image)  # (H, W, 3) uint8: every mode the model accepts, checked here, not in a batch
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, ... for broken files
        raise BadImage(f"{name}: could not decode this {image.format} image ({err})") from None
    return Image.fromarray(rgb)


def encode_png(array: np.ndarray) -> bytes:
    """(H, W) uint8 -> greyscale PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(array, mode="L").save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def mask_png(anomaly_map: np.ndarray, pixel_threshold: float) -> bytes:
    """Binary mask PNG at the map's size: 255 where the map is above the pixel threshold, else 0."""
    return encode_png(np.where(anomaly_map > pixel_threshold, 255, 0).astype(np.uint8))  # (H, W)


def heatmap_png(anomaly_map: np.ndarray, pixel_threshold: float) -> bytes:
    """8-bit heat map PNG with a fixed normalisation relative to the pixel threshold (see HEATMAP_SPAN)."""
    scale = HEATMAP_SPAN * max(pixel_threshold, 1e-6)
    levels = np.clip(anomaly_map / scale, 0.0, 1.0) * 255.0  # (H, W)
    return encode_png(np.rint(levels).astype(np.uint8))
