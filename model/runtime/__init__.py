"""Backbone runtimes: what runs the frozen CLIP and DINOv2 forwards. The heads and the bank always run in torch.

- `torch` (default): the nn.Modules themselves; on a GPU optionally torch.compile or CUDA graphs (`compile`).
- `openvino`, `onnxruntime` (CPU only): ONNX exports of the two vision towers, made by `python -m model.runtime
  export` or on first use, cached under a key of the weights' checksum and the input shape.
- `openvino-int8`: NNCF int8 post-training quantization of that export, calibrated on procedural images (never
  product frames), cached next to it with the precision and the calibration set's version in the name.
- `openvino-bf16`: the fp32 export at OpenVINO's bf16 inference precision; refused on CPUs without native bf16.
"""

from model.runtime.base import COMPILE_MODES, RUNTIMES, BackboneRuntime, create_runtime
from model.runtime.export import export_backbones

__all__ = ["COMPILE_MODES", "RUNTIMES", "BackboneRuntime", "create_runtime", "export_backbones"]
