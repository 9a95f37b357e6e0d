"""create_detector(config, **overrides): the network, its weight files, the backbone runtime, the device cache.

Configuration flows one way: the caller's arguments -> `create_detector`. Nothing here reads the environment.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from open_clip.model import resize_pos_embed

from model.config import ConfigError, DetectorConfig, config_from_dict, load_config, merged
from model.detector import Detector
from model.device_cache import DeviceCache
from model.network import DCPSFR
from model.pos_embed import adopt_native_pos_embed
from model.runtime import create_runtime
from model.weights import (
    DEFAULT_WEIGHTS_DIR,
    heads_file_config,
    heads_path,
    load_heads,
    read_state_dict,
    verified_weight_file,
)

log = logging.getLogger("model")

DEFAULT_DEVICE_CACHE_BYTES = 2 * 1024**3  # per-product device copies (reference tokens, banks) kept at most


def create_detector(
    config: str | Path | DetectorConfig = "tiny",
    *,
    weights_dir: str | Path | None = None,
    device: str | torch.device = "auto",
    random_init: bool = False,
    heads_file: str | Path | None = None,
    runtime: str = "torch",
    runtime_cache_dir: str | Path | None = None,
    compile_mode: str = "off",
    device_cache_bytes: int = DEFAULT_DEVICE_CACHE_BYTES,
    **config_overrides: Any,
) -> Detector:
    """Build a detector from a named config (`paper`, `edge`, `tiny`), a JSON config path or a DetectorConfig.

    config_overrides: config fields by keyword, e.g. `inference={"tiles": 2}` (see `load_config`).
    weights_dir: where backbone files and `heads/<config>.safetensors` live (default: the project's weights/).
    random_init: real-size architecture with random weights, for timing only (never a default; logged loudly).
    heads_file: a heads file, "random" (untrained heads, for training and tests), or None: the weights dir's heads
        file when present, else training-free mode.
    runtime: what runs the frozen backbones: "torch", or on the CPU "openvino" / "onnxruntime" (ONNX exports,
        cached in runtime_cache_dir, default <weights_dir>/runtime-cache; see model/runtime), "openvino-int8"
        (int8 quantized export, cached there too) or "openvino-bf16" (CPUs with native bf16 only).
    compile_mode: torch runtime only: "off", "compile" (torch.compile, static shapes) or "cudagraphs" (CUDA).
    device_cache_bytes: device memory for per-product copies (reference tokens, banks), an LRU.
    Raises ConfigError for an unknown config, field, device, runtime or compile mode, or openvino-bf16 on a CPU
    without native bf16; WeightsMissingError for missing weight files; FileNotFoundError for a heads file that is
    not there.
    """
    cfg = resolved_config(config, config_overrides)
    weights = Path(weights_dir) if weights_dir is not None else DEFAULT_WEIGHTS_DIR
    random_weights = cfg.random_weights or random_init
    heads = _heads_source(cfg, weights, heads_file)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # random weights (tiny, random_init) are the same in every process
        network = DCPSFR(cfg, with_heads=heads is not None)
    if random_weights:
        why = "the tiny test config" if cfg.random_weights else "random_init=True"
        log.warning("RANDOM BACKBONE WEIGHTS (%s): scores and maps mean nothing; for tests and timing only", why)
    else:
        load_backbones(network, cfg, weights)
    heads_info = _load_heads(network, cfg, heads) if isinstance(heads, Path) else {}
    resolved = resolve_device(device)
    cache = Path(runtime_cache_dir) if runtime_cache_dir is not None else default_runtime_cache(weights)
    backbones = create_runtime(runtime, network.to(resolved).eval(), resolved, cache, compile_mode)
    detector = Detector(network, resolved, random_weights, heads_info, backbones, DeviceCache(device_cache_bytes))
    log.info("detector ready: %r", detector)
    return detector


def resolved_config(config: str | Path | DetectorConfig, overrides: dict[str, Any]) -> DetectorConfig:
    """The DetectorConfig of a name, a path or a config, with `overrides` applied (ConfigError for unknown ones)."""
    if isinstance(config, DetectorConfig):
        return config_from_dict(merged(config.to_dict(), overrides)) if overrides else config
    return load_config(config, **overrides)


def resolve_device(device: str | torch.device) -> torch.device:
    """The torch device for a name: "auto" -> cuda when available, else cpu; otherwise the named device. Raises
    ConfigError for an unknown name or CUDA asked for where there is none."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ConfigError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available here; use 'cpu' or 'auto'")
    return resolved


def default_runtime_cache(weights_dir: Path) -> Path:
    """Where ONNX exports of the backbones are cached unless told otherwise."""
    return Path(weights_dir) / "runtime-cache"


def _heads_source(cfg: DetectorConfig, weights: Path, heads_file: str | Path | None) -> Path | str | None:
    if heads_file == "random":
        return "random"
    if heads_file is not None:
        path = Path(heads_file)
        if not path.is_file():
            raise FileNotFoundError(f"heads file {path} not found")
        return path
    default = heads_path(weights, cfg.name)
    return default if default.is_file() else None


def _load_heads(network: DCPSFR, cfg: DetectorConfig, path: Path) -> dict:
    trained_for = heads_file_config(path)
    if trained_for and trained_for != cfg.name:
        log.warning("heads file %s was trained for config %r, loading into %r", path, trained_for, cfg.name)
    info = load_heads(network.heads, path)
    log.info("trained heads loaded from %s", path)
    return info


def load_dino_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """A timm DINOv2 checkpoint (state dict) into `model`, position embeddings on the checkpoint's own grid: each
    input resamples them once from there, as the torch-hub model does (see model.pos_embed)."""
    adopt_native_pos_embed(model, state["pos_embed"])
    model.load_state_dict(state, strict=True)


def load_backbones(network: DCPSFR, cfg: DetectorConfig, weights: Path) -> None:
    """Verified local files only; CLIP's position embeddings resampled when the configured size differs. Raises
    WeightsMissingError naming the file and the fetch command."""
    load_dino_state(network.dino.model, read_state_dict(verified_weight_file(cfg.name, "dino", weights)))
    if network.clip is not None:
        clip_state = read_state_dict(verified_weight_file(cfg.name, "clip", weights))
        resize_pos_embed(clip_state, network.clip.model)
        network.clip.model.load_state_dict(clip_state, strict=True)
