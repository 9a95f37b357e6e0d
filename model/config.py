"""Named detector configs: one JSON per config in model/configs/, or a path to a JSON file."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).parent / "configs"


class ConfigError(ValueError):
    """A config name or file that cannot be used."""


@dataclass(frozen=True)
class ClipConfig:
    """The CLIP tower: which layers feed CACA, input size (px), normalisation, and an open_clip name or inline
    architecture."""

    layers: tuple[int, ...]  # 1-based block indices whose patch tokens feed CACA
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    open_clip_model: str | None = None  # a name in open_clip's registry ...
    arch: dict[str, Any] | None = None  # ... or an inline open_clip architecture (tiny)


@dataclass(frozen=True)
class DinoConfig:
    """The DINOv2 tower: timm model name, input size (px, the shorter side), normalisation and timm overrides."""

    timm_model: str
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    timm_overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HeadsConfig:
    """Sizes and constants of the DCP-SFR heads (defaults as in SPEC.md: prompt length 12, tau 0.07, lambda 1, mu 2)."""

    prompt_length: int = 12
    anomaly_word: str = "damaged"
    temperature: float = 0.07
    amplifier_channels: int = 16
    acl_blocks: int = 3
    acl_heads: int = 8
    acl_kv: str = "mean"  # "mean" (the paper) or "concat"
    lambda_cos: float = 1.0
    mu_local: float = 2.0
    p_max: float = 0.1
    adapter_hidden: int = 64


@dataclass(frozen=True)
class InferenceConfig:
    """Inference settings: map smoothing, training-free score, memory-bank budget and the AnomalyDINO options."""

    map_size: int = 256  # training: masks and maps are compared at this size (at most 256)
    gaussian_sigma: float = 4.0  # map smoothing, in pixels at the frame's own resolution (AnomalyDINO)
    smoothing_max_side: int = 2048  # frames longer than this are smoothed at this size, then upsampled
    top_fraction: float = 0.01  # training-free image score: mean of the top 1% of the map
    bank_budget: int = 16384  # memory-bank tokens kept at most
    bank_reduction: str = "coreset"  # "coreset" or "kmeans"
    reference_rotations: bool = False  # AnomalyDINO: 8 rotated views of each reference in the bank
    background_masking: bool = False  # AnomalyDINO: training-free frames score 0 on PCA-background patches
    tiles: int = 1  # tiled mode (training-free): tiles per side; 1 = off
    tile_overlap: float = 0.1  # tiled mode: overlap of neighbouring tiles, a fraction of a tile


@dataclass(frozen=True)
class DetectorConfig:
    """One named detector config: both backbones, the heads and the inference settings."""

    name: str
    clip: ClipConfig
    dino: DinoConfig
    heads: HeadsConfig
    inference: InferenceConfig
    description: str = ""
    random_weights: bool = False  # tiny: random init by design, no weight file
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-able nested dicts (the inverse of `config_from_dict`)."""
        return asdict(self)


def available_configs() -> list[str]:
    """Names of the packaged configs (`model/configs/*.json`), e.g. ["edge", "paper", "tiny"]."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_config(name_or_path: str | Path, **overrides: Any) -> DetectorConfig:
    """A named config (`paper`, `edge`, `tiny`) or a JSON file, with fields overridden by keyword.

    Overrides name top-level fields; a dict merges into a section, e.g. `load_config("edge", inference={"tiles":
    2}, seed=1)`. Raises ConfigError for an unknown name, a missing or invalid file, or an unknown field.
    """
    raw = merged(read_config(name_or_path), overrides)
    return config_from_dict(raw)


def read_config(name_or_path: str | Path) -> dict[str, Any]:
    """The parsed JSON of a named config or a config file; ConfigError when it cannot be read."""
    path = Path(name_or_path)
    if path.suffix != ".json":
        path = CONFIG_DIR / f"{name_or_path}.json"
        if not path.is_file():
            raise ConfigError(
                f"unknown config {name_or_path!r}: choose one of {available_configs()} or pass a .json path"
            )
    elif not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"config file {path} is not valid JSON: {err}") from err


def merged(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`raw` with `overrides` applied: dicts merge key by key (recursively), anything else replaces. Top-level keys
    must be DetectorConfig fields (ConfigError otherwise)."""
    unknown = sorted(set(overrides) - {f.name for f in fields(DetectorConfig)})
    if unknown:
        raise ConfigError(f"unknown config field(s) {', '.join(unknown)}: the fields are {_field_names()}")
    return _deep_merge(raw, overrides)


def _deep_merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _field_names() -> str:
    return ", ".join(f.name for f in fields(DetectorConfig))


def config_from_dict(raw: dict[str, Any]) -> DetectorConfig:
    """Build a DetectorConfig from parsed JSON; raises ConfigError on missing or unknown fields, both or neither of
    clip's open_clip_model/arch, or a bad acl_kv or bank_reduction."""
    try:
        clip = dict(raw["clip"])
        dino = dict(raw["dino"])
        cfg = DetectorConfig(
            name=raw["name"],
            description=raw.get("description", ""),
            random_weights=bool(raw.get("random_weights", False)),
            seed=int(raw.get("seed", 0)),
            clip=ClipConfig(
                layers=tuple(clip.pop("layers")),
                mean=tuple(clip.pop("mean")),
                std=tuple(clip.pop("std")),
                **clip,
            ),
            dino=DinoConfig(mean=tuple(dino.pop("mean")), std=tuple(dino.pop("std")), **dino),
            heads=HeadsConfig(**raw.get("heads", {})),
            inference=InferenceConfig(**raw.get("inference", {})),
        )
    except (KeyError, TypeError) as err:
        raise ConfigError(f"config is missing or has an unknown field: {err}") from err
    if (cfg.clip.open_clip_model is None) == (cfg.clip.arch is None):
        raise ConfigError("clip needs exactly one of 'open_clip_model' or 'arch'")
    if cfg.heads.acl_kv not in ("mean", "concat"):
        raise ConfigError(f"heads.acl_kv must be 'mean' or 'concat', got {cfg.heads.acl_kv!r}")
    if cfg.inference.bank_reduction not in ("coreset", "kmeans"):
        raise ConfigError("inference.bank_reduction must be 'coreset' or 'kmeans'")
    return cfg
