"""Frame: one camera frame as the detector reads it: decoded pixels, the size the camera sent, bits of real data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from model.pixels import (
    Pixels,
    declared_or_measured_bits,
    high_bit_rgb,
    highest_value,
    is_high_bit,
    own_bit_depth,
    pixels_size,
    rgb_pixels,
)


@dataclass(frozen=True)
class Frame:
    """Decoded pixels and what the decode knew about them.

    pixels: 8-bit data in any PIL mode, high-bit grey ("I;16", "I", float "F"), or high-bit colour as an (H, W, 3)
        uint16 array; possibly smaller than the camera sent it (a large frame may be decoded at a reduced size).
    camera_size: (W, H) as the camera sent it; anomaly maps come back at this size. Default: the pixels' size.
    significant_bits: bits of real data in high-bit data (PNG sBIT), when the file says so.
    """

    pixels: Pixels
    camera_size: tuple[int, int] | None = None
    significant_bits: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.pixels, np.ndarray):
            high_bit_rgb(self.pixels)
        elif not isinstance(self.pixels, Image.Image):
            raise TypeError(f"expected a PIL image or 16-bit colour array, got {type(self.pixels).__name__}")
        if self.camera_size is None:
            object.__setattr__(self, "camera_size", pixels_size(self.pixels))

    @classmethod
    def of(cls, image: Frame | Image.Image) -> Frame:
        """`image` as a Frame (a PIL image's camera size is its own size). Raises TypeError for anything else."""
        return image if isinstance(image, Frame) else cls(image)

    @property
    def width(self) -> int:
        """The camera's width in pixels."""
        return int(self.camera_size[0])

    @property
    def height(self) -> int:
        """The camera's height in pixels."""
        return int(self.camera_size[1])

    def bits(self, bit_depth: int | None) -> int | None:
        """The bits its high-bit data is read at: its own sBIT, else the product's `bit_depth`, else (no bit depth:
        8-bit references) the frame's own maximum rounded up to 10/12/14/16 bits, as references' would be. None for
        8-bit data."""
        if not is_high_bit(self.pixels):
            return None
        return self.significant_bits or bit_depth or own_bit_depth(self.pixels)

    def rgb(self, bit_depth: int | None = None) -> Image.Image:
        """8-bit RGB pixels (the pixels' size), high-bit data scaled by `bits(bit_depth)`; ValueError for grey data
        with no true 8- or 16-bit reading (see model.pixels)."""
        return rgb_pixels(self.pixels, self.bits(bit_depth))

    def bit_depth_warning(self, bit_depth: int | None) -> str | None:
        """How this frame's bit depth differs from its product's references' (`bit_depth`, None: 8-bit references)
        and how it is read, in words; None when they agree, or cannot be told apart (high-bit data without sBIT
        that fits `bit_depth`)."""
        references = "8-bit" if bit_depth is None else f"{bit_depth}-bit"
        if not is_high_bit(self.pixels):
            if bit_depth is None:
                return None
            return (
                f"bit depth: an 8-bit frame, but the product's references are {references} data: the frame is read "
                "as it is (0..255), the references at their full scale; if the camera's pixel format changed, upload "
                "references in the new one"
            )
        highest = self.above_bit_depth(bit_depth)
        if highest is not None:
            return (
                f"bit depth: a frame has values up to {highest}, above its product's bit depth of {bit_depth} bits "
                f"(0..{2**bit_depth - 1}): they are clipped white; refit the references with a larger bit_depth"
            )
        bits = self.bits(bit_depth)
        if bits == bit_depth:
            return None
        source = "its sBIT" if self.significant_bits else "its maximum value"
        return (
            f"bit depth: a {bits}-bit frame (from {source}), but the product's references are {references} data: "
            f"it is read at {bits} bits (0..{2**bits - 1}); if the camera's pixel format changed, upload references "
            "in the new one"
        )

    def above_bit_depth(self, bit_depth: int | None) -> int | None:
        """The highest value of high-bit grey pixels when it exceeds `2**bit_depth - 1`, the full scale they are read
        at (they would be clipped white there), else None. Never for 8-bit data, frames with their own sBIT, or
        bit_depth None."""
        if bit_depth is None or not is_high_bit(self.pixels) or self.significant_bits:
            return None
        highest = highest_value(self.pixels)
        return highest if highest > 2**bit_depth - 1 else None


def frames_of(images: Sequence[Frame | Image.Image]) -> list[Frame]:
    """Frames of PIL images or Frames (see Frame.of)."""
    return [Frame.of(image) for image in images]


def bit_depth_of(frames: Sequence[Frame]) -> int | None:
    """A product's bit depth from its references: None for 8-bit data, else their sBIT, else the maximum value
    rounded up to 10/12/14/16 bits."""
    return declared_or_measured_bits([f.pixels for f in frames], [f.significant_bits for f in frames])
