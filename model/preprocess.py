"""Frames -> backbone batches: `prepare` (both towers, one call) on the CPU, `to_backbone_input` on the device.

`prepare` turns each frame into uint8 pixels at its DINOv2 geometry (see model.geometry), tiles in tiled mode,
and the CLIP letterbox in full mode. Training-free mode embeds every frame at its own aspect (AnomalyDINO: the
memory bank has no positions); full mode brings a frame of another aspect to the product's grid (ACL attends
position by position). Each prepared frame carries its notices (model.notices), e.g. an aspect change.

Floats exist only at backbone size and only on the device: resizing runs on uint8 PIL images, and a quarter of
the float bytes crosses the bus.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from model.extras.tiling import tile_boxes
from model.frame import Frame
from model.geometry import (
    ASPECT_TOLERANCE,
    Geometry,
    aspect_geometry,
    letterbox_geometry,
    matching_geometry,
    same_aspect,
)
from model.notices import Notice
from model.records import Box, PreparedFrame


@dataclass(frozen=True)
class PrepareSpec:
    """What `prepare` needs to know of the detector and the product."""

    product: Geometry  # the product's DINOv2 geometry (fixed by its first reference)
    bit_depth: int | None  # the product's bit depth for high-bit grey frames without sBIT
    short_side: int  # DINOv2's configured input size (the shorter side)
    patch: int  # DINOv2's patch size
    common_grid: bool = False  # full mode: every frame on the product's grid; else each at its own aspect
    reference_sizes: tuple[tuple[int, int], ...] = ()  # the references' (W, H): a frame of none of their aspects
    clip_content: tuple[int, int] | None = None  # full mode: (h, w) of a frame letterboxed into CLIP's square
    tiles: int = 1  # tiled mode: tiles per side (1 = off)
    tile_overlap: float = 0.0


def frame_geometry(width: int, height: int, spec: PrepareSpec) -> Geometry:
    """AnomalyDINO's geometry for a W x H frame on its own (see model.geometry)."""
    return aspect_geometry(height, width, spec.short_side, spec.patch)


def prepare(frames: Sequence[Frame], spec: PrepareSpec) -> list[PreparedFrame]:
    """Each frame at its backbone geometry (or tiled), 8-bit, on the CPU, with its notices.

    Raises ValueError for grey data with no true 8- or 16-bit reading (see model.pixels).
    """
    prepared = []
    for frame in frames:
        rgb = frame.rgb(spec.bit_depth)
        notices = tuple(frame_notices(frame, spec))
        prepared.append(_tiled(frame, rgb, spec, notices) if spec.tiles > 1 else _whole(frame, rgb, spec, notices))
    return prepared


def _whole(frame: Frame, rgb: Image.Image, spec: PrepareSpec, notices: tuple[Notice, ...]) -> PreparedFrame:
    geometry = frame_geometry(frame.width, frame.height, spec)
    if spec.common_grid:
        geometry = matching_geometry(geometry, spec.product)
    clip = None
    if spec.clip_content is not None:
        clip = torch.from_numpy(resized_pixels(rgb, spec.clip_content))  # (h, w, 3)
    dino = torch.from_numpy(geometry_pixels(rgb, geometry))[None]  # (1, Hd, Wd, 3)
    return PreparedFrame(dino, geometry.grid, frame.camera_size, rgb.size, clip=clip, notices=notices)


def _tiled(frame: Frame, rgb: Image.Image, spec: PrepareSpec, notices: tuple[Notice, ...]) -> PreparedFrame:
    images, boxes = tiles_of(rgb, spec.tiles, spec.tile_overlap)
    first = frame_geometry(images[0].width, images[0].height, spec)
    geometries = [matching_geometry(frame_geometry(t.width, t.height, spec), first) for t in images]  # +-1 px tiles
    dino = torch.from_numpy(np.stack([geometry_pixels(t, g) for t, g in zip(images, geometries, strict=True)]))
    return PreparedFrame(
        dino, first.grid, frame.camera_size, rgb.size, tiles=tuple(boxes), notices=notices
    )  # (T, H, W, 3)


def tiles_of(image: Image.Image, tiles: int, overlap: float) -> tuple[list[Image.Image], list[Box]]:
    """The overlapping tiles of an image (tiled mode: `tiles` per side) and their boxes in its pixels."""
    boxes = tile_boxes(image.width, image.height, tiles, overlap)
    return [image.crop(box) for box in boxes], boxes


def frame_notices(frame: Frame, spec: PrepareSpec) -> list[Notice]:
    """Warnings about a frame: another bit depth than the product's references' (Frame.bit_depth_warning), or
    another aspect than the references' (see aspect_notice)."""
    notices = []
    bit_depth = frame.bit_depth_warning(spec.bit_depth)
    if bit_depth is not None:
        notices.append(Notice("bit-depth", bit_depth))
    aspect = aspect_notice(frame, spec)
    return notices + ([aspect] if aspect is not None else [])


def aspect_notice(frame: Frame, spec: PrepareSpec) -> Notice | None:
    """A notice about a frame of another aspect than its product's references.

    Full mode: whenever the frame's own grid is not the product's, as it is then stretched to it. Training-free
    mode inspects every frame at its own aspect, but a frame whose W/H is more than ASPECT_TOLERANCE from every
    reference's is still noticed: a changed camera ROI or binning is worth the line's attention.
    """
    size = f"a {frame.width} x {frame.height} frame"
    if spec.common_grid:
        own = frame_geometry(frame.width, frame.height, spec)
        if own.grid == spec.product.grid:
            return None
        return Notice(
            "aspect",
            f"{size} has another aspect than its product's references (grid {_joined(own.grid)}, theirs "
            f"{_joined(spec.product.grid)}): it is resized to the references' {_joined(spec.product.resized[::-1])} "
            "input and its map stretched back over the frame; check the camera's region of interest and binning, "
            "or refit the references at this aspect",
        )
    if any(same_aspect(frame.camera_size, ref) for ref in spec.reference_sizes):
        return None
    aspects = ", ".join(sorted({f"{w / h:.3f}" for w, h in spec.reference_sizes}))
    return Notice(
        "aspect",
        f"{size} (aspect {frame.width / frame.height:.3f}) has another aspect than its product's references "
        f"({aspects}, more than {ASPECT_TOLERANCE:.0%} apart): it is inspected at its own aspect, but check the "
        "camera's region of interest and binning, or add references at this aspect",
    )


def _joined(pair: tuple[int, int]) -> str:
    return "x".join(map(str, pair))


def geometry_pixels(image: Image.Image, geometry: Geometry) -> np.ndarray:
    """RGB image -> PIL bicubic to the geometry's resized size, cropped to its input: (Hin, Win, 3) uint8."""
    (rh, rw), (ih, iw) = geometry.resized, geometry.input
    return np.array(image.resize((rw, rh), Image.Resampling.BICUBIC))[:ih, :iw]


def resized_pixels(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """RGB image -> PIL bicubic to (h, w): (h, w, 3) uint8."""
    h, w = size
    return np.array(image.resize((w, h), Image.Resampling.BICUBIC))


def clip_content(product: Geometry, clip_size: int) -> tuple[int, int]:
    """(h, w) of a frame of the product's aspect letterboxed into CLIP's size x size square."""
    return letterbox_geometry(*product.resized, clip_size)


def to_backbone_input(
    pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float], device: torch.device
) -> torch.Tensor:
    """(B, H, W, 3) uint8 on the CPU -> (B, 3, H, W) float32 normalised on `device`."""
    batch = uint8_to_device(pixels, device).permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, H, W)
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
    return (batch - mean_t) / std_t


def to_letterboxed_input(
    contents: torch.Tensor, size: int, mean: Sequence[float], std: Sequence[float], device: torch.device
) -> torch.Tensor:
    """(B, h, w, 3) uint8 letterbox contents -> (B, 3, size, size) float32 on `device`: the content normalised at
    the top-left, the rest the normalised mean colour (0)."""
    b, h, w, _ = contents.shape
    batch = torch.zeros(b, 3, size, size, device=device)
    batch[:, :, :h, :w] = to_backbone_input(contents, mean, std, device)  # (B, 3, h, w)
    return batch


def uint8_to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A uint8 CPU tensor on `device`; page-locked first on CUDA, so the upload is a DMA."""
    if device.type == "cuda":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def stacked(arrays: Sequence[np.ndarray]) -> torch.Tensor:
    """(B, H, W, 3) uint8 tensor of equally sized (H, W, 3) arrays."""
    return torch.from_numpy(np.stack(arrays))
