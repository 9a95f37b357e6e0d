"""Frames -> backbone batches: `prepare` (both towers, one call) on the CPU, `to_backbone_input` on the device.

`prepare` turns each frame into uint8 pixels at its DINOv2 geometry (see model.geometry), tiles in tiled mode,
and the CLIP letterbox in full mode. Floats exist only at backbone size and only on the device: resizing runs on
uint8 PIL images, and a quarter of the float bytes crosses the bus.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from model.extras.tiling import tile_boxes
from model.frame import Frame
from model.geometry import Geometry, aspect_geometry, letterbox_geometry, matching_geometry
from model.notices import Notice
from model.records import Box, PreparedFrame


@dataclass(frozen=True)
class PrepareSpec:
    """What `prepare` needs to know of the detector and the product."""

    product: Geometry  # the product's DINOv2 geometry (fixed by its first reference)
    bit_depth: int | None  # the product's bit depth for high-bit grey frames without sBIT
    short_side: int  # DINOv2's configured input size (the shorter side)
    patch: int  # DINOv2's patch size
    clip_content: tuple[int, int] | None = None  # full mode: (h, w) of a frame letterboxed into CLIP's square
    tiles: int = 1  # tiled mode: tiles per side (1 = off)
    tile_overlap: float = 0.0


def frame_geometry(width: int, height: int, spec: PrepareSpec) -> Geometry:
    """AnomalyDINO's geometry for a W x H frame on its own (see model.geometry)."""
    return aspect_geometry(height, width, spec.short_side, spec.patch)


def prepare(frames: Sequence[Frame], spec: PrepareSpec) -> tuple[list[PreparedFrame], list[Notice]]:
    """Each frame at its backbone geometry (or tiled), 8-bit, on the CPU; plus notices about the frames.

    Raises ValueError for grey data with no true 8- or 16-bit reading (see model.pixels).
    """
    prepared, notices = [], []
    for frame in frames:
        rgb = frame.rgb(spec.bit_depth)
        notices += frame_notices(frame, spec)
        prepared.append(_tiled(frame, rgb, spec) if spec.tiles > 1 else _whole(frame, rgb, spec))
    return prepared, notices


def _whole(frame: Frame, rgb: Image.Image, spec: PrepareSpec) -> PreparedFrame:
    geometry = matching_geometry(frame_geometry(frame.width, frame.height, spec), spec.product)
    clip = None
    if spec.clip_content is not None:
        clip = torch.from_numpy(resized_pixels(rgb, spec.clip_content))  # (h, w, 3)
    dino = torch.from_numpy(geometry_pixels(rgb, geometry))[None]  # (1, Hd, Wd, 3)
    return PreparedFrame(dino, geometry.grid, frame.camera_size, rgb.size, clip=clip)


def _tiled(frame: Frame, rgb: Image.Image, spec: PrepareSpec) -> PreparedFrame:
    images, boxes = tiles_of(rgb, spec.tiles, spec.tile_overlap)
    first = frame_geometry(images[0].width, images[0].height, spec)
    geometries = [matching_geometry(frame_geometry(t.width, t.height, spec), first) for t in images]
    dino = torch.from_numpy(np.stack([geometry_pixels(t, g) for t, g in zip(images, geometries, strict=True)]))
    return PreparedFrame(dino, first.grid, frame.camera_size, rgb.size, tiles=tuple(boxes))  # (T, H, W, 3)


def tiles_of(image: Image.Image, tiles: int, overlap: float) -> tuple[list[Image.Image], list[Box]]:
    """The overlapping tiles of an image (tiled mode: `tiles` per side) and their boxes in its pixels."""
    boxes = tile_boxes(image.width, image.height, tiles, overlap)
    return [image.crop(box) for box in boxes], boxes


def frame_notices(frame: Frame, spec: PrepareSpec) -> list[Notice]:
    """Warnings about a frame: another bit depth than the product's references' (Frame.bit_depth_warning), or
    another aspect than the references' (resized to theirs, its map stretched back)."""
    notices = []
    bit_depth = frame.bit_depth_warning(spec.bit_depth)
    if bit_depth is not None:
        notices.append(Notice("bit-depth", bit_depth))
    own = frame_geometry(frame.width, frame.height, spec)
    if spec.tiles <= 1 and own.grid != spec.product.grid:
        notices.append(
            Notice(
                "aspect",
                f"a {frame.width} x {frame.height} frame has another aspect than its product's references (grid "
                f"{'x'.join(map(str, spec.product.grid))}): it is resized to the references' "
                f"{'x'.join(map(str, spec.product.resized[::-1]))} input, and its map stretched back over the frame",
            )
        )
    return notices


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
