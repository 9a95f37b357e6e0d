"""Decoded images -> backbone input tensors. Any PIL size and mode; each backbone has its own size and mean/std."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB from any PIL mode: L, LA, P, RGBA, CMYK, 16-bit and 32-bit greyscale, float."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)  # (H, W)
        scale = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        if image.mode == "F" and values.max(initial=0) <= 1.0:
            scale = 1.0
        grey = np.clip(values / scale * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))  # transparent parts read as black
        image = Image.alpha_composite(background, image)
    return np.array(image.convert("RGB"), dtype=np.uint8)


def image_tensors(images: Sequence[Image.Image], device: torch.device) -> list[torch.Tensor]:
    """Each image as a (3, H, W) float tensor in [0, 1] on `device`."""
    if len(images) == 0:
        raise ValueError("no images given")
    tensors = []
    for image in images:
        if not isinstance(image, Image.Image):
            raise TypeError(f"expected PIL images, got {type(image).__name__}")
        array = torch.from_numpy(to_rgb_array(image))  # (H, W, 3) uint8
        if device.type == "cuda":
            array = array.pin_memory()  # page-locked: the upload is a DMA that overlaps the host's next image
        tensors.append(array.to(device, non_blocking=True).permute(2, 0, 1).float().div_(255.0))  # (3, H, W)
    return tensors


def backbone_input(
    images: Sequence[torch.Tensor],
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> torch.Tensor:
    """Resize every (3, H, W) image to size x size (the whole frame, no crop) and normalise -> (B, 3, S, S)."""
    resized = [
        F.interpolate(img[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        for img in images
    ]
    batch = torch.cat(resized).clamp_(0.0, 1.0)  # (B, 3, S, S)
    mean_t = torch.tensor(mean, device=batch.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=batch.device).view(1, 3, 1, 1)
    return (batch - mean_t) / std_t
