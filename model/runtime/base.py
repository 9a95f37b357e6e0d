"""The runtime interface and the torch runtime; `create_runtime` picks one by name."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

import torch

from model.backbones import ClipFeatures, DinoFeatures
from model.config import ConfigError
from model.network import DCPSFR

CompileMode = Literal["off", "compile", "cudagraphs"]
RUNTIMES: tuple[str, ...] = ("torch", "openvino", "onnxruntime", "openvino-int8", "openvino-bf16")
COMPILE_MODES: tuple[str, ...] = ("off", "compile", "cudagraphs")
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)  # compiled forwards see only these batch sizes (static shapes)


class BackboneRuntime(Protocol):
    """Frozen backbone forwards on preprocessed batches: (B, 3, H, W) float32 normalised -> features."""

    name: str

    def dino(self, images: torch.Tensor) -> DinoFeatures:
        """DINOv2 features of (B, 3, Hd, Wd) normalised images."""

    def clip(self, images: torch.Tensor) -> ClipFeatures:
        """CLIP features of (B, 3, Sc, Sc) normalised images."""


class TorchRuntime:
    """The network's own modules. With `compile`, each backbone is wrapped by torch.compile with static shapes
    (one graph per batch bucket and input size = per product grid); `cudagraphs` adds CUDA-graph replay
    (torch.compile mode "reduce-overhead"). Batches are padded up to the next bucket so graphs are reused."""

    def __init__(self, network: DCPSFR, compile_mode: CompileMode = "off") -> None:
        self.name = "torch" if compile_mode == "off" else f"torch+{compile_mode}"
        self.network = network
        self.compile_mode = compile_mode
        self._dino = self._clip = None
        if compile_mode != "off":
            mode = "reduce-overhead" if compile_mode == "cudagraphs" else "max-autotune-no-cudagraphs"
            self._dino = torch.compile(network.dino, mode=mode, dynamic=False, fullgraph=False)
            if network.clip is not None:
                self._clip = torch.compile(network.clip, mode=mode, dynamic=False, fullgraph=False)

    def dino(self, images: torch.Tensor) -> DinoFeatures:
        """DINOv2 features, through the compiled module when compiling (batch padded to its bucket, outputs copied)."""
        if self.compile_mode == "off":
            return self.network.extract_dino(images)
        b = images.shape[0]  # compiled outputs may be reused buffers (CUDA graphs): slice the batch and copy
        out = self._dino(self._pad(images))
        return DinoFeatures(patch_tokens=out.patch_tokens[:b].clone(), cls_token=out.cls_token[:b].clone())

    def clip(self, images: torch.Tensor) -> ClipFeatures:
        """CLIP features, through the compiled module when compiling (batch padded to its bucket, outputs copied)."""
        if self.compile_mode == "off":
            return self.network.extract_clip(images)
        assert self._clip is not None, "this network has no CLIP tower (training-free mode)"
        b = images.shape[0]
        out = self._clip(self._pad(images))
        return ClipFeatures(layer_tokens=out.layer_tokens[:b].clone(), image_embedding=out.image_embedding[:b].clone())

    def _pad(self, images: torch.Tensor) -> torch.Tensor:
        """Zero-padded up to the next batch bucket (B', 3, H, W), so compiled graphs are reused."""
        b = images.shape[0]
        if b >= BATCH_BUCKETS[-1]:
            return images
        bucket = next(size for size in BATCH_BUCKETS if size >= b)
        if bucket == b:
            return images
        return torch.cat([images, images.new_zeros(bucket - b, *images.shape[1:])])


def create_runtime(
    name: str,
    network: DCPSFR,
    device: torch.device,
    cache_dir: Path,
    compile_mode: str = "off",
) -> BackboneRuntime:
    """The named runtime for `network` on `device`. Raises ConfigError for an unknown name or a bad combination."""
    if name not in RUNTIMES:
        raise ConfigError(f"unknown runtime {name!r}: use one of {', '.join(RUNTIMES)}")
    if compile_mode not in COMPILE_MODES:
        raise ConfigError(f"unknown compile mode {compile_mode!r}: use one of {', '.join(COMPILE_MODES)}")
    if name == "torch":
        if compile_mode == "cudagraphs" and device.type != "cuda":
            raise ConfigError("compile mode 'cudagraphs' needs a CUDA device")
        return TorchRuntime(network, compile_mode)  # type: ignore[arg-type]
    if device.type != "cpu":
        raise ConfigError(f"runtime {name!r} runs on the CPU only; use runtime 'torch' on {device}")
    if compile_mode != "off":
        raise ConfigError(f"compile mode {compile_mode!r} applies to the torch runtime only")
    from model.runtime.exported import ExportedRuntime  # imports onnxruntime / openvino only when chosen

    return ExportedRuntime(name, network, cache_dir)
