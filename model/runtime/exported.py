"""Runtimes on ONNX exports: OpenVINO and ONNX Runtime sessions, one per tower and input size (CPU).

`openvino` and `onnxruntime` run the fp32 export in fp32. `openvino-int8` runs an NNCF int8 quantization of it
(model/runtime/quantize.py; the layers NNCF leaves in float run in f32). `openvino-bf16` runs the fp32 export with
OpenVINO's bf16 inference precision, only on CPUs with native bf16 (AVX512_BF16 or AMX): elsewhere it is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from model.backbones import ClipFeatures, DinoFeatures
from model.config import ConfigError
from model.network import DCPSFR
from model.runtime.export import cached_onnx, tower, weight_checksum
from model.runtime.openvino_core import openvino_core
from model.runtime.quantize import cached_int8

log = logging.getLogger(__name__)

Session = Callable[[np.ndarray], list[np.ndarray]]


def cpu_has_native_bf16() -> bool:
    """Whether OpenVINO's CPU plugin reports native bf16 (AVX512_BF16 or AMX) on this CPU."""
    return "BF16" in openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # int8 dot-product units (VNNI, AMX)


def cpu_has_int8_units(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool | None:
    """Whether the CPU flags list VNNI or AMX int8 units; None where /proc/cpuinfo cannot be read (not Linux)."""
    try:
        flags = next((line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")), "").split()
    except OSError:
        return None
    return any(flag in flags for flag in INT8_FLAGS)


def openvino_session(path: Path, threads: int, cache_dir: Path, precision: str = "f32") -> Session:
    """OpenVINO CPU plugin at inference precision `precision` ("f32" or "bf16"). f32 is pinned because the plugin's
    default on CPUs with bf16 units is bf16, which moves the maps by ~2e-2."""
    compiled = openvino_core().compile_model(
        str(path),
        "CPU",
        {
            "CACHE_DIR": str(cache_dir / "openvino"),  # compiled blobs: later starts skip compiling
            "INFERENCE_PRECISION_HINT": precision,
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


SESSIONS: dict[str, Callable[[Path, int, Path], Session]] = {
    "openvino": openvino_session,
    "openvino-int8": openvino_session,  # on the int8 IR
    "openvino-bf16": lambda path, threads, cache_dir: openvino_session(path, threads, cache_dir, "bf16"),
    "onnxruntime": onnxruntime_session,
}


class ExportedRuntime:
    """Backbone forwards through an exported graph. Sessions are made lazily per (tower, H, W): a new input size
    exports once (logged), so products with different grids each get a static-shape graph. Raises ConfigError for
    `openvino-bf16` on a CPU without native bf16; logs a warning for `openvino-int8` on a CPU without int8 units."""

    def __init__(self, name: str, network: DCPSFR, cache_dir: Path) -> None:
        if name == "openvino-bf16" and not cpu_has_native_bf16():
            raise ConfigError(
                "runtime 'openvino-bf16' needs a CPU with native bf16 (AVX512_BF16 or AMX); this CPU has none, so "
                "bf16 would not run natively: use 'openvino' (fp32) instead"
            )
        if name == "openvino-int8" and cpu_has_int8_units() is False:
            log.warning(
                "runtime 'openvino-int8' on a CPU without VNNI or AMX int8 units: int8 ran slower than 'openvino' "
                "fp32 on such a CPU (AVX2 only; see docs/performance.md); prefer 'openvino' here"
            )
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
        if self.name == "openvino-int8":
            cfg = self.network.cfg.dino if kind == "dino" else self.network.cfg.clip
            path = cached_int8(path, size, cfg.mean, cfg.std)
        session = SESSIONS[self.name](path, torch.get_num_threads(), self.cache_dir)
        self._sessions[(kind, *size)] = session
        log.info("%s session for %s at %dx%d from %s", self.name, kind, *size, path.name)
        return session
