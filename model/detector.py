"""Detector: fit references for a product, predict scores and anomaly maps. create_detector() builds one."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import open_clip
import timm
import torch
import torch.nn.functional as F
from open_clip.model import resize_pos_embed
from PIL import Image
from timm.layers import resample_abs_pos_embed
from torchvision.transforms.functional import gaussian_blur

from model.backbones import ClipFeatures, DinoFeatures
from model.bank import MemoryBank
from model.config import ClipConfig, ConfigError, DetectorConfig, DinoConfig, load_config
from model.device_cache import DeviceCache
from model.heads import top_fraction_mean
from model.network import DCPSFR, ReferenceFeatures
from model.preprocess import backbone_input, image_tensors
from model.records import Mode, Prediction
from model.references import ReferenceSet
from model.runtime import BackboneRuntime, create_runtime
from model.weights import (
    DEFAULT_WEIGHTS_DIR,
    heads_file_config,
    heads_path,
    load_heads,
    read_state_dict,
    verified_weight_file,
)

log = logging.getLogger(__name__)

FIT_CHUNK = 8  # references are embedded this many at a time
DEFAULT_DEVICE_CACHE_BYTES = 2 * 1024**3  # per-product device copies kept at most (the service sets its own)


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ConfigError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available here; use 'cpu' or 'auto'")
    return resolved


def feature_fingerprint(cfg: DetectorConfig, random_weights: bool) -> str:
    """What reference features depend on: the DINOv2 backbone, its input size, and whether weights are random."""
    basis = {"dino": cfg.dino.__dict__, "random_weights": random_weights, "seed": cfg.seed if random_weights else None}
    return hashlib.sha256(json.dumps(basis, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Detector:
    """DCP-SFR inference: `fit_references(images)` once per product, then `predict(images, refs)`."""

    def __init__(
        self,
        network: DCPSFR,
        device: torch.device,
        random_weights: bool,
        heads_info: dict,
        runtime: BackboneRuntime | None = None,
    ) -> None:
        self.network = network.to(device).eval()
        self.runtime: BackboneRuntime = runtime or create_runtime("torch", self.network, device, Path())
        self.config: DetectorConfig = network.cfg
        self.device = device
        self.random_weights = random_weights
        self.heads_info = heads_info
        self.mode: Mode = "full" if network.heads is not None else "training-free"
        self.fingerprint = feature_fingerprint(self.config, random_weights)
        self._text_features: torch.Tensor | None = None
        # per-product device copies (reference tokens, banks) in a byte-bounded LRU; set a budget to change it
        self.device_cache = DeviceCache(DEFAULT_DEVICE_CACHE_BYTES)

    def __repr__(self) -> str:
        return (
            f"Detector(config={self.config.name!r}, mode={self.mode!r}, device={self.device}, "
            f"runtime={self.runtime.name!r}, random_weights={self.random_weights})"
        )

    # --- references -----------------------------------------------------------------------------------------

    @torch.inference_mode()
    def fit_references(self, images: Sequence[Image.Image]) -> ReferenceSet:
        """Embed K normal images of one product and build its memory bank."""
        patches, classes = [], []
        for start in range(0, len(images), FIT_CHUNK):
            dino, _ = self.embed(images[start : start + FIT_CHUNK], with_clip=False)
            patches.append(dino.patch_tokens.float().cpu())  # (k, Nd, Dd)
            classes.append(dino.cls_token.float().cpu())  # (k, Dd)
        meta = {
            "created": datetime.now(UTC).isoformat(),
            "image_sizes": [list(img.size) for img in images],
            "grid": list(self.network.dino_grid),
            "versions": {"torch": torch.__version__, "timm": timm.__version__, "open_clip": open_clip.__version__},
        }
        return self._reference_set(torch.cat(patches), torch.cat(classes), meta)  # (K, Nd, Dd), (K, Dd)

    def subset_references(self, refs: ReferenceSet, indices: Sequence[int]) -> ReferenceSet:
        """The references at `indices` with their own bank, without a backbone pass (leave-one-out calibration)."""
        refs.check_compatible(self.config.name, self.fingerprint)
        keep = [int(i) for i in indices]
        sizes = refs.meta.get("image_sizes")
        meta = {**refs.meta, "image_sizes": [sizes[i] for i in keep]} if sizes else dict(refs.meta)
        return self._reference_set(refs.patch_tokens[keep], refs.cls_tokens[keep], meta)

    def extend_references(self, refs: ReferenceSet, images: Sequence[Image.Image]) -> ReferenceSet:
        """`refs` plus `images` as further references: only the new images pass the backbone."""
        refs.check_compatible(self.config.name, self.fingerprint)
        added = self.fit_references(images)
        sizes = refs.meta.get("image_sizes", []) + added.meta["image_sizes"]
        patch_tokens = torch.cat([refs.patch_tokens, added.patch_tokens])  # (K + k, Nd, Dd)
        cls_tokens = torch.cat([refs.cls_tokens, added.cls_tokens])  # (K + k, Dd)
        return self._reference_set(patch_tokens, cls_tokens, {**added.meta, "image_sizes": sizes})

    def _reference_set(self, patch_tokens: torch.Tensor, cls_tokens: torch.Tensor, meta: dict) -> ReferenceSet:
        inference = self.config.inference
        bank = MemoryBank.build(patch_tokens.flatten(0, 1), inference.bank_budget, inference.bank_reduction)
        return ReferenceSet(
            config_name=self.config.name,
            fingerprint=self.fingerprint,
            patch_tokens=patch_tokens,
            cls_tokens=cls_tokens,
            bank=bank,
            meta=meta,
        )

    @torch.inference_mode()
    def embed(self, images: Sequence[Image.Image], with_clip: bool) -> tuple[DinoFeatures, ClipFeatures | None]:
        """Backbone features of a batch, preprocessed exactly as `predict` does (training caches these)."""
        tensors = image_tensors(images, self.device)
        dino = self._dino(self._backbone_input(tensors, self.config.dino))
        return dino, (self._clip(self._backbone_input(tensors, self.config.clip)) if with_clip else None)

    def load_references(self, folder: str | Path) -> ReferenceSet:
        refs = ReferenceSet.load(folder)
        refs.check_compatible(self.config.name, self.fingerprint)
        return refs

    # --- prediction -----------------------------------------------------------------------------------------

    @torch.inference_mode()
    def predict(self, images: Sequence[Image.Image], refs: ReferenceSet) -> list[Prediction]:
        """Scores and anomaly maps (each at its image's own H x W) for a batch of one product's images."""
        refs.check_compatible(self.config.name, self.fingerprint)
        timings: dict[str, float] = {}
        with _timed(timings, "preprocess", self.device):
            tensors = image_tensors(images, self.device)
            dino_input = self._backbone_input(tensors, self.config.dino)  # (B, 3, Sd, Sd)
            clip_input = self._backbone_input(tensors, self.config.clip) if self.mode == "full" else None
        with _timed(timings, "dino", self.device):
            dino = self._dino(dino_input)
        clip = None
        if clip_input is not None:
            with _timed(timings, "clip", self.device):
                clip = self._clip(clip_input)
        with _timed(timings, "bank_search", self.device):
            s_cos = 1.0 - refs.bank.max_similarity(dino.patch_tokens, self.device_cache).to(self.device)  # (B, Nd)
        with _timed(timings, "heads", self.device):
            grid_maps, raw_scores = self._score(dino, clip, s_cos, refs)  # (B, hd, wd), (B,)
        with _timed(timings, "postprocess", self.device):
            maps = self._full_resolution_maps(grid_maps, [t.shape[-2:] for t in tensors])
            raw_scores = raw_scores.float().cpu()
            logits = raw_scores.tolist() if self.mode == "full" else [None] * len(maps)
            scores = (torch.sigmoid(raw_scores) if self.mode == "full" else raw_scores).tolist()
        return [
            Prediction(s, m, self.mode, self.random_weights, timings, logit=y)
            for s, m, y in zip(scores, maps, logits, strict=True)
        ]

    @torch.inference_mode()
    def held_out_predictions(self, refs: ReferenceSet) -> list[Prediction]:
        """Training-free leave-one-out from the cached tokens: each reference's patch tokens against the bank of
        the other K-1 (no backbone pass at all). Needs K >= 2. Maps at each reference's own size when known."""
        assert refs.n_references >= 2, "leave-one-out needs two or more references"
        sizes = refs.meta.get("image_sizes") or [list(self.network.dino_grid)[::-1]] * refs.n_references
        predictions = []
        for held_out in range(refs.n_references):
            others = self.subset_references(refs, [i for i in range(refs.n_references) if i != held_out])
            tokens = refs.patch_tokens[held_out : held_out + 1].to(self.device)  # (1, Nd, Dd)
            s_cos = 1.0 - others.bank.max_similarity(tokens).to(self.device)  # (1, Nd)
            grid = s_cos.view(1, *self.network.dino_grid)  # (1, hd, wd)
            width, height = sizes[held_out]
            anomaly_map = self._full_resolution_maps(grid, [(height, width)])[0]
            score = float(top_fraction_mean(s_cos, self.config.inference.top_fraction)[0])
            predictions.append(Prediction(score, anomaly_map, "training-free", self.random_weights))
        return predictions

    def _score(
        self, dino: DinoFeatures, clip: ClipFeatures | None, s_cos: torch.Tensor, refs: ReferenceSet
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b = s_cos.shape[0]
        if self.mode == "training-free":
            grid = s_cos.view(b, *self.network.dino_grid)  # (B, hd, wd)
            return grid, top_fraction_mean(s_cos, self.config.inference.top_fraction)
        patch_tokens, cls_tokens = refs.tokens_on(self.device, self.device_cache)
        reference = ReferenceFeatures(patch_tokens[None], cls_tokens[None])  # (1, K, Nd, Dd), (1, K, Dd)
        out = self.network.run_heads(clip, dino, reference, s_cos, self._cached_text_features())
        return out.s_hat, out.y_hat  # the logit y: predict() reports sigmoid(y) as the score and y as the logit

    def _cached_text_features(self) -> torch.Tensor:
        if self._text_features is None:
            self._text_features = self.network.text_features()  # (2, Dt): fixed once the heads are trained
        return self._text_features

    @staticmethod
    def _backbone_input(tensors: list[torch.Tensor], cfg: ClipConfig | DinoConfig) -> torch.Tensor:
        return backbone_input(tensors, cfg.image_size, cfg.mean, cfg.std)  # (B, 3, S, S)

    def _dino(self, images: torch.Tensor) -> DinoFeatures:
        with self._autocast():
            return self.runtime.dino(images)

    def _clip(self, images: torch.Tensor) -> ClipFeatures:
        with self._autocast():
            return self.runtime.clip(images)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _full_resolution_maps(self, grid_maps: torch.Tensor, sizes: list[torch.Size]) -> list:
        """Grid maps (B, hd, wd) -> smoothed at map_size -> each image's (H, W) float32 numpy array."""
        inference = self.config.inference
        size = inference.map_size
        maps = F.interpolate(grid_maps.float()[:, None], size=(size, size), mode="bilinear", align_corners=False)
        sigma = inference.gaussian_sigma
        if sigma > 0:
            kernel = 2 * math.ceil(3 * sigma) + 1
            maps = gaussian_blur(maps, kernel_size=[kernel, kernel], sigma=[sigma, sigma])  # (B, 1, S, S)
        out = []
        for smoothed, (h, w) in zip(maps, sizes, strict=True):
            full = F.interpolate(smoothed[None], size=(int(h), int(w)), mode="bilinear", align_corners=False)
            out.append(full[0, 0].cpu().numpy().astype("float32", copy=False))  # (H, W)
        return out


@contextlib.contextmanager
def _timed(timings: dict[str, float], stage: str, device: torch.device) -> Iterator[None]:
    start = time.perf_counter()
    yield
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    timings[stage] = round((time.perf_counter() - start) * 1000.0, 3)


# --- construction ---------------------------------------------------------------------------------------------


def create_detector(
    config: str | Path = "tiny",
    weights_dir: str | Path | None = None,
    device: str | torch.device = "auto",
    random_init: bool = False,
    heads: str | Path | None = None,
    runtime: str = "torch",
    runtime_cache_dir: str | Path | None = None,
    compile_mode: str = "off",
) -> Detector:
    """Build a detector from a named config (`paper`, `edge`, `tiny`) or a JSON config path.

    weights_dir: where backbone files and `heads/<config>.safetensors` live (default: the project's weights/).
    random_init: real-size architecture with random weights, for timing only (never a default; logged loudly).
    heads: a heads file, "random" (untrained heads, for training and tests), or None: the weights dir's heads
        file when present, else training-free mode.
    runtime: what runs the frozen backbones: "torch", or on the CPU "openvino" / "onnxruntime" (ONNX exports,
        cached in runtime_cache_dir, default <weights_dir>/runtime-cache; see model/runtime).
    compile_mode: torch runtime only: "off", "compile" (torch.compile, static shapes) or "cudagraphs" (CUDA).
    Raises ConfigError for an unknown config, device, runtime or compile mode; WeightsMissingError for
    missing weight files.
    """
    cfg = load_config(config)
    weights = Path(weights_dir) if weights_dir is not None else DEFAULT_WEIGHTS_DIR
    random_weights = cfg.random_weights or random_init
    heads_file = _resolve_heads(cfg, weights, heads)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # random weights (tiny, random_init) are the same in every process
        network = DCPSFR(cfg, with_heads=heads_file is not None)
    if random_weights:
        why = "the tiny test config" if cfg.random_weights else "random_init=True"
        log.warning("RANDOM BACKBONE WEIGHTS (%s): scores and maps mean nothing; for tests and timing only", why)
    else:
        _load_backbones(network, cfg, weights)
    heads_info: dict = {}
    if isinstance(heads_file, Path):
        heads_info = _load_heads(network, cfg, heads_file)
    resolved = resolve_device(device)
    cache = Path(runtime_cache_dir) if runtime_cache_dir is not None else default_runtime_cache(weights)
    backbones = create_runtime(runtime, network.to(resolved).eval(), resolved, cache, compile_mode)
    detector = Detector(network, resolved, random_weights, heads_info, backbones)
    log.info("detector ready: %r", detector)
    return detector


def default_runtime_cache(weights_dir: Path) -> Path:
    """Where ONNX exports of the backbones are cached unless told otherwise."""
    return Path(weights_dir) / "runtime-cache"


def _resolve_heads(cfg: DetectorConfig, weights: Path, heads: str | Path | None) -> Path | str | None:
    if heads == "random":
        return "random"
    if heads is not None:
        path = Path(heads)
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


def _load_backbones(network: DCPSFR, cfg: DetectorConfig, weights: Path) -> None:
    """Verified local files only; position embeddings resampled when the configured size differs."""
    dino_state = read_state_dict(verified_weight_file(cfg.name, "dino", weights))
    model = network.dino.model
    if dino_state["pos_embed"].shape != model.pos_embed.shape:
        dino_state["pos_embed"] = resample_abs_pos_embed(
            dino_state["pos_embed"], new_size=list(model.patch_embed.grid_size), num_prefix_tokens=1
        )
    model.load_state_dict(dino_state, strict=True)
    if network.clip is not None:
        clip_state = read_state_dict(verified_weight_file(cfg.name, "clip", weights))
        resize_pos_embed(clip_state, network.clip.model)
        network.clip.model.load_state_dict(clip_state, strict=True)
