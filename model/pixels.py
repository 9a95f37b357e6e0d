"""Pixel values as the backbones read them: any PIL mode -> 8-bit RGB, scaled by the data's real bit depth.

- 8-bit data is taken as it is; an alpha channel that is zero everywhere is ignored (the colour channels are the
  image), partial alpha is composited over black.
- High-bit data, grey (16-bit PIL modes) or colour (an (H, W, 3) uint16 array: PIL has no 16-bit colour mode), is
  divided by its real full scale `2**bits - 1` (bits from the frame's PNG `sBIT`, else the product's bit depth),
  never by 65535 blindly.
- Grey data with no true 8- or 16-bit reading is refused, never clipped: integer pixels outside 0..65535, float
  pixels outside 0..1 and 0..255, NaN or infinity.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
BIT_DEPTHS = (10, 12, 14, 16)  # a product's bit depth: its references' maximum rounded up to one of these

Pixels = Image.Image | np.ndarray
"""A frame's pixels: a PIL image of any mode, or high-bit colour as an (H, W, 3) uint16 array (`high_bit_rgb`)."""


class OutsideSixteenBits(ValueError):
    """Integer grey data with values outside 0..65535 (`low`, `high`): no true 16-bit reading."""

    def __init__(self, low: int, high: int) -> None:
        super().__init__(f"integer pixels from {low} to {high}, outside 0..65535")
        self.low, self.high = low, high


def is_high_bit(image: Pixels) -> bool:
    """Whether the pixels are high-bit data: a 16- or 32-bit greyscale PIL mode (HIGH_BIT_MODES) or 16-bit colour."""
    return isinstance(image, np.ndarray) or image.mode in HIGH_BIT_MODES


def high_bit_rgb(array: np.ndarray) -> np.ndarray:
    """`array` when it is high-bit colour, (H, W, 3) uint16; TypeError for any other array."""
    if array.dtype != np.uint16 or array.ndim != 3 or array.shape[2] != 3:
        raise TypeError(f"expected a PIL image or (H, W, 3) uint16 16-bit colour, got {array.dtype} {array.shape}")
    return array


def pixels_size(image: Pixels) -> tuple[int, int]:
    """(W, H) of a PIL image or a high-bit colour array."""
    return (image.shape[1], image.shape[0]) if isinstance(image, np.ndarray) else tuple(image.size)


def highest_value(image: Pixels) -> int:
    """The largest pixel value of high-bit data, grey or colour (0 for an empty image)."""
    return int(np.asarray(image).max(initial=0))


def own_bit_depth(image: Pixels) -> int | None:
    """The bit depth high-bit data shows by itself: its maximum rounded up to 10/12/14/16 bits; None for 8-bit."""
    return rounded_bit_depth(highest_value(image)) if is_high_bit(image) else None


def rounded_bit_depth(highest: int) -> int:
    """The smallest of BIT_DEPTHS that holds `highest` (16 at most)."""
    return next((bits for bits in BIT_DEPTHS if highest < 2**bits), 16)


def sixteen_bit_grey(grey: np.ndarray) -> np.ndarray:
    """(H, W) integer grey as uint16 when its values fit 0..65535 (16-bit data in a wider container: Pillow's mode
    I, a signed 16-bit or unsigned 32-bit TIFF). Raises OutsideSixteenBits otherwise: any scale beyond would be a
    guess that changes between frames, and clipping made such frames white."""
    if grey.dtype == np.uint16:
        return grey
    low, high = (int(grey.min()), int(grey.max())) if grey.size else (0, 0)
    if low < 0 or high > 65535:
        raise OutsideSixteenBits(low, high)
    return grey.astype(np.uint16)


def float_full_scale(values: np.ndarray) -> float:
    """The full scale of float grey data (mode F): 1.0 when all values lie within 0..1, 255.0 within 0..255.

    Raises ValueError for anything else (below 0, above 255, NaN or inf), naming the range: there is no scale
    that is not a guess, and clipping made such frames white (NaN scored like black).
    """
    if values.size == 0:
        return 1.0
    if not np.isfinite(values).all():
        raise ValueError(
            "float pixels include NaN or infinity; convert the image to 8- or 16-bit integers, scaled as every "
            "frame of this product is"
        )
    low, high = float(values.min()), float(values.max())
    if low < 0 or high > 255:
        raise ValueError(
            f"float pixels from {low:g} to {high:g}; float images are read only within 0..1 or 0..255: convert "
            "the image to 8- or 16-bit integers, scaled as every frame of this product is"
        )
    return 1.0 if high <= 1.0 else 255.0


def to_rgb_array(image: Pixels, bits: int | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB from any PIL mode (L, LA, P, RGBA, CMYK, 16-bit and 32-bit greyscale, float) or from
    16-bit colour ((H, W, 3) uint16).

    bits: the bits of real data of high-bit data (its sBIT or its product's bit depth); None reads it as 16-bit.
    Raises ValueError for integer grey (mode I) outside 0..65535, and for float grey outside 0..255 or with
    NaN/inf (see the module docstring); TypeError for an array that is not 16-bit colour.
    """
    if isinstance(image, np.ndarray):
        return _scaled(high_bit_rgb(image), float(2 ** int(bits or 16) - 1))  # (H, W, 3)
    if is_high_bit(image) or image.mode == "F":
        return np.repeat(_high_bit_grey(image, bits)[:, :, None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        if image.getextrema()[3][1] == 0:  # an empty alpha channel is an export artefact, not a defect map
            return np.array(image.convert("RGB"), dtype=np.uint8)
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))  # transparent parts read as black
        image = Image.alpha_composite(background, image)
    return np.array(image.convert("RGB"), dtype=np.uint8)


def _high_bit_grey(image: Image.Image, bits: int | None) -> np.ndarray:
    raw = np.asarray(image)  # (H, W) uint16, int32 or float32
    if image.mode == "F":
        full_scale = float_full_scale(raw)
    else:
        try:
            raw = sixteen_bit_grey(raw)
        except OutsideSixteenBits as err:
            raise ValueError(
                f"integer pixels (mode {image.mode}) from {err.low} to {err.high}, outside 0..65535: convert the "
                "image to 16 bits first"
            ) from None
        full_scale = float(2 ** int(bits or 16) - 1)
    return _scaled(raw, full_scale)  # (H, W)


def _scaled(raw: np.ndarray, full_scale: float) -> np.ndarray:
    """Values over 0..full_scale as uint8 0..255, rounded; above the full scale they are 255."""
    return np.clip(raw.astype(np.float32) * (255.0 / full_scale) + 0.5, 0, 255).astype(np.uint8)


def rgb_pixels(image: Pixels, bits: int | None = None) -> Image.Image:
    """`image` as an 8-bit RGB PIL image of the same size (see `to_rgb_array`); RGB images are returned as they are."""
    if isinstance(image, Image.Image) and image.mode == "RGB":
        return image
    return Image.fromarray(to_rgb_array(image, bits))


def declared_or_measured_bits(images: Sequence[Pixels], declared: Sequence[int | None]) -> int | None:
    """A product's bit depth: None for 8-bit data; the largest declared (sBIT) bits when every high-bit image
    declares them, else the largest value rounded up to 10/12/14/16 bits."""
    high = [(image, bits) for image, bits in zip(images, declared, strict=True) if is_high_bit(image)]
    if not high:
        return None
    if all(bits for _, bits in high):
        return max(int(bits) for _, bits in high)
    return rounded_bit_depth(max(highest_value(image) for image, _ in high))
