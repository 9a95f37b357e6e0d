"""Decoded frames -> backbone input tensors, keeping each frame's geometry, bit depth and pixels.

- Geometry (AnomalyDINO, `DINOv2Wrapper.prepare_image`): the shorter side is resized to the configured size with
  PIL bicubic (antialiased), the longer side to `int(size * long / short)` (torchvision's `Resize(size)`), then
  the bottom/right rows and columns past a multiple of the patch size are cropped. Beyond an 8:1 aspect the
  longer side is capped at 8x the shorter (ours; it bounds the work per image).
- Pixels: 8-bit data as it is; high-bit grey data (16-bit containers) divided by its real full scale
  `2**bits - 1` (bits from the PNG `sBIT` chunk, else the product's bit depth), never by 65535 blindly; an
  alpha channel that is zero everywhere is ignored (the colour channels are the image).
- Memory: resizing runs on uint8 PIL images; floats exist only at backbone size.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
BIT_DEPTHS = (10, 12, 14, 16)  # a product's bit depth: its references' maximum rounded up to one of these
FRAME_SIZE_KEY = "frame_size"  # image.info[...] = (W, H) as the camera sent it, when decoded at a reduced size
SIGNIFICANT_BITS_KEY = "significant_bits"  # image.info[...] = bits of real data (PNG sBIT), when known
MAX_ASPECT_RATIO = 8  # a longer side beyond 8x the shorter is squeezed to 8x: bounds the patch grid (and attention)
DECODE_SHORT_SIDE = 2048  # frames are decoded/reduced to at least this shorter side (4.5x the 448 backbone)


@dataclass(frozen=True)
class Geometry:
    """How one frame reaches the backbone: resized to `resized` (H, W), cropped to `input` (H, W) = grid x patch."""

    resized: tuple[int, int]
    input: tuple[int, int]
    grid: tuple[int, int]


def aspect_geometry(height: int, width: int, short_side: int, patch: int) -> Geometry:
    """AnomalyDINO's backbone geometry for an H x W frame (see the module docstring), with the longer side capped
    at MAX_ASPECT_RATIO x the shorter (AnomalyDINO has no cap; without one a 2 x 2000 px image gave a 16 x 16000
    patch grid that kept the model busy for minutes). Raises ValueError for an empty image or patch grid."""
    if min(height, width) < 1:
        raise ValueError(f"empty image ({width} x {height})")
    long_side = int(min(short_side * max(height, width) / min(height, width), short_side * MAX_ASPECT_RATIO))
    resized = (short_side, long_side) if height <= width else (long_side, short_side)
    grid = (resized[0] // patch, resized[1] // patch)
    if min(grid) < 1:
        raise ValueError(f"a {width} x {height} image gives an empty {patch}-px patch grid")
    return Geometry(resized=resized, input=(grid[0] * patch, grid[1] * patch), grid=grid)


def square_geometry(size: int, patch: int) -> Geometry:
    """The whole frame squashed to size x size (training features only: batches mix aspects there)."""
    grid = (size // patch, size // patch)
    return Geometry(resized=(size, size), input=(grid[0] * patch, grid[1] * patch), grid=grid)


def frame_size(image: Image.Image) -> tuple[int, int]:
    """(W, H) of the frame as the camera sent it (a reduced decode keeps it in `image.info`)."""
    width, height = image.info.get(FRAME_SIZE_KEY, image.size)
    return int(width), int(height)


def png_significant_bits(data: bytes) -> int | None:
    """Bits of real data per sample from a PNG's `sBIT` chunk (greyscale: its first byte), or None."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"sBIT" and length >= 1 and pos + 9 <= len(data):
            return int(data[pos + 8])
        if kind in (b"IDAT", b"IEND"):
            return None  # sBIT must come before the pixel data
        pos += 12 + length
    return None


def is_high_bit(image: Image.Image) -> bool:
    """Whether the image is a 16- or 32-bit greyscale PIL mode (HIGH_BIT_MODES)."""
    return image.mode in HIGH_BIT_MODES


def bit_depth_of(images: Sequence[Image.Image]) -> int | None:
    """A product's bit depth from its references: None for 8-bit data, else the maximum rounded up to 10..16."""
    high = [img for img in images if is_high_bit(img)]
    if not high:
        return None
    declared = [img.info[SIGNIFICANT_BITS_KEY] for img in high if SIGNIFICANT_BITS_KEY in img.info]
    if len(declared) == len(high):
        return max(declared)
    highest = max(int(np.asarray(img).max(initial=0)) for img in high)
    return next((bits for bits in BIT_DEPTHS if highest < 2**bits), 16)


def above_bit_depth(image: Image.Image, bit_depth: int | None) -> int | None:
    """The highest value of high-bit grey `image` when it exceeds `2**bit_depth - 1`, the full scale it is read
    at (it would be clipped white there), else None. Never for 8-bit data, images with their own sBIT, or None."""
    if bit_depth is None or not is_high_bit(image) or SIGNIFICANT_BITS_KEY in image.info:
        return None
    highest = int(np.asarray(image).max(initial=0))
    return highest if highest > 2**bit_depth - 1 else None


def to_rgb_array(image: Image.Image, bit_depth: int | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB from any PIL mode: L, LA, P, RGBA, CMYK, 16-bit and 32-bit greyscale, float.

    High-bit grey data is scaled by `2**bits - 1` with bits = the image's own sBIT when known, else `bit_depth`
    (the product's), else 16. Float grey (mode F) is scaled by `float_full_scale`. Alpha that is zero everywhere
    is dropped; partial alpha is composited over black.
    Raises ValueError for integer grey (mode I) with values outside 0..65535, and for float grey outside 0..255
    or with NaN/inf: any scale for those would be a guess, and clipping made such frames white.
    """
    if is_high_bit(image) or image.mode == "F":
        return np.repeat(_high_bit_grey(image, bit_depth)[:, :, None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        if image.getextrema()[3][1] == 0:  # an empty alpha channel is an export artefact, not a defect map
            return np.array(image.convert("RGB"), dtype=np.uint8)
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))  # transparent parts read as black
        image = Image.alpha_composite(background, image)
    return np.array(image.convert("RGB"), dtype=np.uint8)


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


class OutsideSixteenBits(ValueError):
    """Integer grey data with values outside 0..65535 (`low`, `high`): no true 16-bit reading."""

    def __init__(self, low: int, high: int) -> None:
        super().__init__(f"integer pixels from {low} to {high}, outside 0..65535")
        self.low, self.high = low, high


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


def _high_bit_grey(image: Image.Image, bit_depth: int | None) -> np.ndarray:
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
        bits = image.info.get(SIGNIFICANT_BITS_KEY) or bit_depth or 16
        full_scale = float(2 ** int(bits) - 1)
    return np.clip(raw.astype(np.float32) * (255.0 / full_scale) + 0.5, 0, 255).astype(np.uint8)  # (H, W)


def rgb_image(image: Image.Image, bit_depth: int | None = None) -> Image.Image:
    """`image` as an 8-bit RGB PIL image (see `to_rgb_array`), keeping its frame size."""
    if image.mode == "RGB":
        return image
    rgb = Image.fromarray(to_rgb_array(image, bit_depth))
    rgb.info[FRAME_SIZE_KEY] = frame_size(image)
    return rgb


def reduced(image: Image.Image, short_side: int = DECODE_SHORT_SIDE) -> Image.Image:
    """A large frame box-reduced by an integer factor, its shorter side kept >= `short_side`; info keeps the size."""
    factor = min(image.size) // short_side
    if factor < 2:
        return image
    small = image.resize((image.width // factor, image.height // factor), Image.Resampling.BOX)
    small.info = {**image.info, FRAME_SIZE_KEY: frame_size(image)}
    return small


def backbone_batch(
    images: Sequence[Image.Image],
    geometries: Sequence[Geometry],
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
) -> torch.Tensor:
    """RGB images -> PIL bicubic to each geometry's resized size, crop, normalise -> (B, 3, Hin, Win) float32."""
    if len({g.input for g in geometries}) != 1:
        raise ValueError("a batch needs one backbone input size")
    arrays = []
    for image, geometry in zip(images, geometries, strict=True):
        (rh, rw), (ih, iw) = geometry.resized, geometry.input
        resized = image.resize((rw, rh), Image.Resampling.BICUBIC)
        arrays.append(np.asarray(resized)[:ih, :iw])  # (Hin, Win, 3) uint8: floats only at backbone size
    batch = _uint8_to_device(np.stack(arrays), device).permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, H, W)
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
    return (batch - mean_t) / std_t


def _uint8_to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    tensor = torch.from_numpy(array)  # (B, H, W, 3) uint8: a quarter of the float bytes crosses the bus
    if device.type == "cuda":
        tensor = tensor.pin_memory()  # page-locked: the upload is a DMA
    return tensor.to(device, non_blocking=True)


def letterbox_geometry(height: int, width: int, size: int) -> tuple[int, int]:
    """(h, w) of an H x W frame scaled isotropically to fit a size x size square (CLIP's fixed input)."""
    scale = size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def letterbox_batch(
    images: Sequence[Image.Image], size: int, mean: Sequence[float], std: Sequence[float], device: torch.device
) -> tuple[torch.Tensor, tuple[int, int]]:
    """RGB images scaled isotropically into the top-left of a size x size square padded with the mean colour.

    Returns (B, 3, size, size) and the (h, w) of the content, so a CLIP cue map can be cropped back to the
    frame's region and resized to the DINOv2 grid without distorting geometry. One content size per batch:
    the first image's (a product's frames share their references' aspect; others are resized to it).
    """
    height, width = images[0].height, images[0].width
    h, w = letterbox_geometry(height, width, size)
    arrays = []
    for image in images:
        arrays.append(np.asarray(image.resize((w, h), Image.Resampling.BICUBIC)))  # (h, w, 3) uint8
    content = _uint8_to_device(np.stack(arrays), device).permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, h, w)
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
    batch = torch.zeros(len(images), 3, size, size, device=device)  # normalised mean colour = 0
    batch[:, :, :h, :w] = (content - mean_t) / std_t
    return batch, (h, w)


def gaussian_kernel_1d(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """scipy.ndimage.gaussian_filter's kernel: radius int(truncate * sigma + 0.5), normalised."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_smooth(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Isotropic Gaussian of (B, H, W) maps, sigma in pixels, borders as scipy's mode='reflect' (d c b a | a b c d).

    This is AnomalyDINO's `scipy.ndimage.gaussian_filter(map, sigma=4)`, separable, on the maps' device.
    """
    if sigma <= 0:
        return maps
    kernel = gaussian_kernel_1d(sigma).to(maps.device)
    out = maps[:, None]  # (B, 1, H, W)
    for dim in (2, 3):
        out = _symmetric_pad(out, len(kernel) // 2, dim)
        weight = kernel.view(1, 1, -1, 1) if dim == 2 else kernel.view(1, 1, 1, -1)
        out = torch.nn.functional.conv2d(out, weight)
    return out[:, 0]  # (B, H, W)


def _symmetric_pad(x: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    size = x.shape[dim]
    if radius == 0:
        return x
    reps = math.ceil(radius / size) * 2 + 1  # mirror tiles enough for tiny maps too
    tiles = [x.flip(dim) if (i - reps // 2) % 2 else x for i in range(reps)]
    full = torch.cat(tiles, dim=dim)
    start = (reps // 2) * size - radius
    return full.narrow(dim, start, size + 2 * radius)
