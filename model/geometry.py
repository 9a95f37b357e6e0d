"""How a frame reaches each backbone: DINOv2's resize-and-crop (AnomalyDINO) and CLIP's letterbox.

- DINOv2 (AnomalyDINO, `DINOv2Wrapper.prepare_image`): the shorter side is resized to the configured size with
  PIL bicubic (antialiased), the longer side to `int(size * long / short)` (torchvision's `Resize(size)`), then
  the bottom/right rows and columns past a multiple of the patch size are cropped. Beyond an 8:1 aspect the
  longer side is capped at 8x the shorter (ours; it bounds the work per image).
- CLIP has a fixed square input: the frame is scaled isotropically into its top-left corner (letterbox).
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_ASPECT_RATIO = 8  # a longer side beyond 8x the shorter is squeezed to 8x: bounds the patch grid (and attention)
ASPECT_TOLERANCE = 0.01  # two frames whose W/H differ by at most 1 % have the same aspect (a few pixels of crop)


@dataclass(frozen=True)
class Geometry:
    """How one frame reaches DINOv2: resized to `resized` (H, W), cropped to `input` (H, W) = grid x patch."""

    resized: tuple[int, int]
    input: tuple[int, int]
    grid: tuple[int, int]


def aspect_geometry(height: int, width: int, short_side: int, patch: int) -> Geometry:
    """AnomalyDINO's backbone geometry for an H x W frame (see the module docstring), the longer side capped at
    MAX_ASPECT_RATIO x the shorter: without a cap a 2 x 2000 px image gives a 16 x 16000 patch grid.
    Raises ValueError for an empty image or patch grid."""
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


def matching_geometry(own: Geometry, product: Geometry) -> Geometry:
    """The frame's own geometry when it gives the product's grid; else the product's (a plain resize).

    Full mode only (training-free mode keeps every frame's own geometry): a frame of the references' aspect (any
    size) keeps its own resize and crop; one of another aspect is resized to the product's resized size, so its
    grid matches the references' positions (needed by ACL) and the map, stretched back over the frame, is in the
    frame's geometry again.
    """
    return own if own.grid == product.grid else product


def same_aspect(size: tuple[int, int], other: tuple[int, int], tolerance: float = ASPECT_TOLERANCE) -> bool:
    """Whether two (W, H) sizes have the same aspect W/H within `tolerance` (relative, either way)."""
    ratio = (size[0] * other[1]) / (size[1] * other[0])
    return max(ratio, 1 / ratio) <= 1 + tolerance


def letterbox_geometry(height: int, width: int, size: int) -> tuple[int, int]:
    """(h, w) of an H x W frame scaled isotropically to fit a size x size square (CLIP's fixed input)."""
    scale = size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))
