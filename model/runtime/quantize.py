"""int8 post-training quantization (NNCF) of an exported tower, calibrated on procedural images, cached as OpenVINO IR.

The calibration set is generated here, deterministically: gradients, sinusoid textures, checkerboards, soft blobs and
noise at the tower's input size. It never contains product frames, so a quantized tower is the same for every product
and can be made ahead (`python -m model.runtime export --precision int8`). Changing the set bumps CALIBRATION_VERSION,
which is part of the cached file's name.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from model.network import DCPSFR
from model.runtime.openvino_core import openvino_core

log = logging.getLogger(__name__)

CALIBRATION_VERSION = 1  # bump when calibration_images or the NNCF settings change (invalidates the int8 cache)
CALIBRATION_IMAGES = 32
PATTERNS = ("gradient", "sinusoid", "checker", "blobs", "noise")


def calibration_image(size: tuple[int, int], index: int) -> np.ndarray:
    """Procedural image `index` of the calibration set: (H, W, 3) uint8, the same on every machine.
    The pattern cycles through PATTERNS; colours, frequencies and offsets come from a generator seeded by `index`."""
    h, w = size
    rng = np.random.default_rng(index)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)  # (H, W) each
    ys, xs = ys / h, xs / w
    pattern = PATTERNS[index % len(PATTERNS)]
    colours = rng.uniform(0, 255, (2, 3)).astype(np.float32)  # (2, 3): two end colours
    if pattern == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        t = (np.cos(angle) * xs + np.sin(angle) * ys + 1.5) % 1.0  # (H, W) in [0, 1)
    elif pattern == "sinusoid":
        fx, fy = rng.uniform(2, 40, 2)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (fx * xs + fy * ys) + rng.uniform(0, 2 * np.pi))
    elif pattern == "checker":
        cells = int(rng.integers(4, 48))
        t = ((np.floor(xs * cells) + np.floor(ys * cells)) % 2).astype(np.float32)
    elif pattern == "blobs":
        t = np.zeros((h, w), np.float32)
        for cy, cx, radius in rng.uniform((0, 0, 0.03), (1, 1, 0.25), (12, 3)):
            t += np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * radius**2))
        t = np.clip(t, 0, 1)
    else:
        t = rng.uniform(0, 1, (h, w)).astype(np.float32)
    pixels = colours[0] + t[..., None] * (colours[1] - colours[0])  # (H, W, 3)
    pixels += rng.normal(0, rng.uniform(0, 12), (h, w, 3))  # sensor-like noise of a random strength
    return np.clip(pixels, 0, 255).astype(np.uint8)


def calibration_batches(
    size: tuple[int, int], mean: Sequence[float], std: Sequence[float], count: int = CALIBRATION_IMAGES
) -> list[np.ndarray]:
    """The calibration set as the tower's inputs: `count` arrays (1, 3, H, W) float32, normalised by mean/std."""
    mean_a = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
    std_a = np.asarray(std, np.float32).reshape(1, 3, 1, 1)
    batches = []
    for index in range(count):
        pixels = calibration_image(size, index).transpose(2, 0, 1)[None].astype(np.float32) / 255.0  # (1, 3, H, W)
        batches.append(((pixels - mean_a) / std_a).astype(np.float32))
    return batches


def int8_path(onnx_file: Path) -> Path:
    """The quantized IR next to its fp32 ONNX export: <onnx stem>-int8-c<CALIBRATION_VERSION>.xml (+ .bin)."""
    return onnx_file.with_name(f"{onnx_file.stem}-int8-c{CALIBRATION_VERSION}.xml")


def quantize_onnx(onnx_file: Path, batches: list[np.ndarray], path: Path) -> Path:
    """NNCF post-training int8 quantization of `onnx_file` on `batches`, saved as OpenVINO IR at `path` (.xml and
    .bin, the .xml moved in last so a present .xml means a complete pair).
    Raises ImportError when nncf is not installed (the `cpu` extra)."""
    import nncf
    import openvino as ov

    start = time.perf_counter()
    model = openvino_core().read_model(str(onnx_file))
    quantized = nncf.quantize(
        model,
        nncf.Dataset(batches),
        model_type=nncf.ModelType.TRANSFORMER,  # keeps LayerNorm, Softmax and GELU in float
        subset_size=len(batches),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".int8-", dir=path.parent))
    try:
        ov.save_model(quantized, str(staging / path.name), compress_to_fp16=False)
        os.replace(staging / path.with_suffix(".bin").name, path.with_suffix(".bin"))
        os.replace(staging / path.name, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("quantized %s to int8 in %.1f s: %s", onnx_file.name, time.perf_counter() - start, path)
    return path


def cached_int8(onnx_file: Path, size: tuple[int, int], mean: Sequence[float], std: Sequence[float]) -> Path:
    """The cached int8 IR of `onnx_file` (a tower exported at input size `size`); quantized now (and logged) when
    missing. The name adds the precision and CALIBRATION_VERSION to the fp32 export's key (weights, size, export)."""
    path = int8_path(onnx_file)
    if path.is_file() and path.with_suffix(".bin").is_file():
        return path
    log.warning(
        "no cached int8 model of %s: quantizing now on %d procedural images, this takes a while once "
        "(run `python -m model.runtime export --precision int8` beforehand to avoid it)",
        onnx_file.name,
        CALIBRATION_IMAGES,
    )
    return quantize_onnx(onnx_file, calibration_batches(size, mean, std), path)


def quantize_backbones(network: DCPSFR, onnx_files: list[Path]) -> list[Path]:
    """The int8 IR (cached or made now) of each of `network`'s ONNX exports (`export_backbones`' files, in its
    order: DINOv2, then CLIP when present), at the towers' configured sizes."""
    towers = [("dino", network.cfg.dino)] + ([("clip", network.cfg.clip)] if network.clip is not None else [])
    return [
        cached_int8(path, (cfg.image_size, cfg.image_size), cfg.mean, cfg.std)
        for (_, cfg), path in zip(towers, onnx_files, strict=True)
    ]
