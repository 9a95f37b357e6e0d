"""Runtimes on ONNX exports: OpenVINO and ONNX Runtime sessions, one per tower and input size (CPU, fp32)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.backbones import ClipFeatures, DinoFeatures
from model.network import DCPSFR
from model.runtime.export import cached_onnx, tower, weight_checksum

log = logging.getLogger(__name__)

Session = Callable[[np.ndarray], list[np.ndarray]]


_OPENVINO_CORE = None
_OPENVINO_CORE_LOCK = threading.Lock()


def openvino_core() -> Any:
    """The process's one ov.Core, never released. Each ov.Core loads a CPU plugin of its own, and the plugin puts
    an alternate signal stack of its own on the thread that loads it; freeing the plugin unmaps that stack and puts
    the previous one back only if its own is still current. Two plugins freed in the order they were made, or one
    freed on another thread, leave the thread's signal stack unmapped: the next signal handled there (SIGPIPE,
    SIGINT, SIGTERM) kills the process with SIGSEGV, before any handler (faulthandler too) runs."""
    global _OPENVINO_CORE
    with _OPENVINO_CORE_LOCK:
        if _OPENVINO_CORE is None:
            import openvino as ov

            _OPENVINO_CORE = ov.Core()
        return _OPENVINO_CORE


def openvino_session(path: Path, threads: int, cache_dir: Path) -> Session:
    """OpenVINO CPU plugin, fp32 (its default on CPUs with bf16 units is bf16, which breaks parity)."""
    compiled = openvino_core().compile_model(
        str(path),
        "CPU",
        {
            "CACHE_DIR": str(cache_dir / "openvino"),  # compiled blobs: later starts skip compiling
            "INFERENCE_PRECISION_HINT": "f32",
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
        },
    )
    request = compiled.create_infer_request()

    def run(images: np.ndarray) -> list[np.ndarray]:
        request.infer({0: images})
        return [request.get_output_tensor(i).data.copy() for i in range(len(compiled.outputs))]

    return run


def onnxruntime_session(path: Path, threads: int, cache_dir: Path) -> Session:
    """ONNX Runtime CPU execution provider, all graph optimisations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda images: session.run(None, {"images": images})


SESSIONS = {"openvino": openvino_session, "onnxruntime": onnxruntime_session}


class ExportedRuntime:
    """Backbone forwards through an exported graph. Sessions are made lazily per (tower, H, W): a new input size
    exports once (logged), so products with different grids each get a static-shape graph."""

    def __init__(self, name: str, network: DCPSFR, cache_dir: Path) -> None:
        self.name = name
        self.network = network
        self.cache_dir = Path(cache_dir)
        self.checksums = {"dino": weight_checksum(tower(network, "dino"))}
        if network.clip is not None:
            self.checksums["clip"] = weight_checksum(tower(network, "clip"))
        self._sessions: dict[tuple[str, int, int], Session] = {}

    def dino(self, images: torch.Tensor) -> DinoFeatures:
        """DINOv2 features from the exported graph (on the CPU), exporting/opening it for a new input size first."""
        patch_tokens, cls_token = self._run("dino", images)
        return DinoFeatures(patch_tokens=patch_tokens, cls_token=cls_token)  # (B, Nd, Dd), (B, Dd)

    def clip(self, images: torch.Tensor) -> ClipFeatures:
        """CLIP features from the exported graph (on the CPU), exporting/opening it for a new input size first."""
        layer_tokens, embedding = self._run("clip", images)
        return ClipFeatures(layer_tokens=layer_tokens, image_embedding=embedding)  # (B, m, Nc, Dc), (B, Dt)

    def _run(self, kind: str, images: torch.Tensor) -> list[torch.Tensor]:
        h, w = images.shape[-2:]
        session = self._sessions.get((kind, h, w))
        if session is None:
            session = self._open(kind, (h, w))
        x = images.detach().to("cpu", torch.float32).contiguous().numpy()  # (B, 3, H, W)
        return [torch.from_numpy(out) for out in session(x)]

    def _open(self, kind: str, size: tuple[int, int]) -> Session:
        path = cached_onnx(self.network, kind, size, self.cache_dir, self.checksums[kind])
        session = SESSIONS[self.name](path, torch.get_num_threads(), self.cache_dir)
        self._sessions[(kind, *size)] = session
        log.info("%s session for %s at %dx%d from %s", self.name, kind, *size, path.name)
        return session
