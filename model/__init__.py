"""DCP-SFR few-shot anomaly detector: pure PyTorch + open_clip + timm (+ faiss). Never imports the service.

Everything the service (and any other user) needs is exported here; `model.training` (training, evaluation,
datasets) is a sibling package this library never imports. The exports load on first use, so `import model`
and the command lines that need little (`python -m model.weights --help`) do not pay for torch, timm and
open_clip up front.
"""

from __future__ import annotations

import importlib
from typing import Any

# exported name -> (module, attribute)
_EXPORTS: dict[str, tuple[str, str]] = {
    # building and running a detector
    "create_detector": ("model.factory", "create_detector"),
    "resolve_device": ("model.factory", "resolve_device"),
    "Detector": ("model.detector", "Detector"),
    "load_config": ("model.config", "load_config"),
    "available_configs": ("model.config", "available_configs"),
    "ConfigError": ("model.config", "ConfigError"),
    "DetectorConfig": ("model.config", "DetectorConfig"),
    # what goes in and what comes out
    "Frame": ("model.frame", "Frame"),
    "Prediction": ("model.records", "Prediction"),
    "PreparedBatch": ("model.records", "PreparedBatch"),
    "GridScores": ("model.records", "GridScores"),
    "NOTICE_KINDS": ("model.notices", "KINDS"),
    "ReferenceSet": ("model.references", "ReferenceSet"),
    "ReferenceMismatchError": ("model.references", "ReferenceMismatchError"),
    "feature_fingerprint": ("model.references", "feature_fingerprint"),
    # pixels as the backbones read them
    "OutsideSixteenBits": ("model.pixels", "OutsideSixteenBits"),
    "is_high_bit": ("model.pixels", "is_high_bit"),
    "pixels_size": ("model.pixels", "pixels_size"),
    "Pixels": ("model.pixels", "Pixels"),
    "sixteen_bit_grey": ("model.pixels", "sixteen_bit_grey"),
    "to_rgb_array": ("model.pixels", "to_rgb_array"),
    "rotated": ("model.extras.anomalydino", "rotated"),
    # defect regions and metrics
    "Region": ("model.regions", "Region"),
    "RegionSet": ("model.regions", "RegionSet"),
    "find_regions": ("model.regions", "find_regions"),
    "image_metrics": ("model.metrics", "image_metrics"),
    "f1_at_threshold": ("model.metrics", "f1_at_threshold"),
    # durable files and command-line types (standard library only: light clients import these too)
    "write_atomic": ("model.files", "write_atomic"),
    "fsync_dir": ("model.files", "fsync_dir"),
    "fsync_file": ("model.files", "fsync_file"),
    "is_temporary": ("model.files", "is_temporary"),
    "remove_path": ("model.files", "remove_path"),
    "positive_int": ("model.argtypes", "positive_int"),
    "positive_seconds": ("model.argtypes", "positive_seconds"),
    "tcp_port": ("model.argtypes", "tcp_port"),
    # weight files
    "WeightsMissingError": ("model.weights", "WeightsMissingError"),
    "FetchError": ("model.weights.hub", "FetchError"),
    "FetchProgress": ("model.weights.fetching", "FetchProgress"),
    "HubOptions": ("model.weights.hub", "HubOptions"),
    "fetch_weights": ("model.weights.fetching", "fetch"),
    "weights_fetch_command": ("model.weights", "fetch_command"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'model' has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
