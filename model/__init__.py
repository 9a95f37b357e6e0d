"""DCP-SFR few-shot anomaly detector: pure PyTorch + open_clip + timm (+ faiss). Never imports the service."""

from model.config import ConfigError, DetectorConfig, available_configs, load_config
from model.detector import Detector, create_detector
from model.records import Prediction
from model.references import ReferenceMismatchError, ReferenceSet
from model.weights import WeightsMissingError

__all__ = [
    "ConfigError",
    "Detector",
    "DetectorConfig",
    "Prediction",
    "ReferenceMismatchError",
    "ReferenceSet",
    "WeightsMissingError",
    "available_configs",
    "create_detector",
    "load_config",
]
