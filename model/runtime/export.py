"""ONNX export of the frozen vision towers, cached under a key of the weights' checksum and the input shape."""

from __future__ import annotations

import hashlib
import logging
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from model.files import atomic_path
from model.network import DCPSFR

log = logging.getLogger(__name__)

OPSET = 17
EXPORT_VERSION = 2  # bump when the exported graph changes for the same weights (invalidates the cache)


class DinoGraph(nn.Module):
    """DINOv2 with plain tensor outputs: (B, 3, H, W) -> patch tokens (B, Nd, Dd), class token (B, Dd)."""

    def __init__(self, network: DCPSFR) -> None:
        super().__init__()
        self.backbone = network.dino

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> patch tokens (B, Nd, Dd), class token (B, Dd)."""
        out = self.backbone(images)
        return out.patch_tokens, out.cls_token


class ClipGraph(nn.Module):
    """CLIP vision tower with plain outputs: (B, 3, H, W) -> layer tokens (B, m, Nc, Dc), embedding (B, Dt)."""

    def __init__(self, network: DCPSFR) -> None:
        super().__init__()
        assert network.clip is not None, "no CLIP tower in training-free mode"
        self.backbone = network.clip

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> layer tokens (B, m, Nc, Dc), image embedding (B, Dt)."""
        out = self.backbone(images)
        return out.layer_tokens, out.image_embedding


def tower(network: DCPSFR, kind: str) -> nn.Module:
    """The module whose weights an export of `kind` ("dino" or "clip") depends on."""
    if kind == "dino":
        return network.dino
    assert network.clip is not None, "no CLIP tower in training-free mode"
    return network.clip.model.visual


def weight_checksum(module: nn.Module) -> str:
    """sha256 (16 hex digits) over the module's parameter and buffer names, shapes, dtypes and values."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def onnx_path(cache_dir: Path, network: DCPSFR, kind: str, size: tuple[int, int], checksum: str) -> Path:
    """cache_dir/<config>-<kind>-<H>x<W>-<checksum>-v<EXPORT_VERSION>.onnx: one file per weights and input size."""
    h, w = size
    return cache_dir / f"{network.cfg.name}-{kind}-{h}x{w}-{checksum}-v{EXPORT_VERSION}.onnx"


def export_onnx(network: DCPSFR, kind: str, size: tuple[int, int], path: Path) -> Path:
    """Trace one tower at input size `size` (H, W), batch axis dynamic, into `path` (written atomically)."""
    graph = (DinoGraph if kind == "dino" else ClipGraph)(network).eval()
    example = torch.zeros(1, 3, *size)  # (1, 3, H, W)
    outputs = ["patch_tokens", "cls_token"] if kind == "dino" else ["layer_tokens", "image_embedding"]
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    try:
        torch.backends.mha.set_fastpath_enabled(False)  # the fused attention kernel has no ONNX form
        with torch.no_grad(), warnings.catch_warnings(), atomic_path(path) as tmp:
            warnings.simplefilter("ignore")  # tracer warnings about Python control flow on constant shapes
            torch.onnx.export(
                graph,
                (example,),
                str(tmp),
                dynamo=False,
                opset_version=OPSET,
                input_names=["images"],
                output_names=outputs,
                dynamic_axes={"images": {0: "batch"}, **{name: {0: "batch"} for name in outputs}},
            )
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    elapsed = time.perf_counter() - start
    log.info("exported %s %s at %dx%d to %s in %.1f s", network.cfg.name, kind, *size, path, elapsed)
    return path


def cached_onnx(network: DCPSFR, kind: str, size: tuple[int, int], cache_dir: Path, checksum: str) -> Path:
    """The cached export for these weights and size; exported now (and logged) when missing."""
    path = onnx_path(cache_dir, network, kind, size, checksum)
    if path.is_file():
        return path
    log.warning(
        "no cached ONNX export of %s %s at %dx%d (weights %s): exporting now, this takes a while once "
        "(run `python -m model.runtime export` beforehand to avoid it)",
        network.cfg.name,
        kind,
        *size,
        checksum,
    )
    return export_onnx(network, kind, size, path)


def default_sizes(network: DCPSFR) -> dict[str, tuple[int, int]]:
    """Each tower's configured input size (H, W)."""
    sizes = {"dino": (network.cfg.dino.image_size, network.cfg.dino.image_size)}
    if network.clip is not None:
        sizes["clip"] = (network.cfg.clip.image_size, network.cfg.clip.image_size)
    return sizes


def export_backbones(network: DCPSFR, cache_dir: Path) -> list[Path]:
    """Export (or find cached) every tower of `network` at its configured size; returns the ONNX files."""
    return [
        cached_onnx(network, kind, size, cache_dir, weight_checksum(tower(network, kind)))
        for kind, size in default_sizes(network).items()
    ]
