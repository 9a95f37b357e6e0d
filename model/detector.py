"""Detector: fit references for a product, predict scores and anomaly maps. create_detector() builds one."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
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

from model.anomalydino import background_mask, rotated_views
from model.backbones import ClipFeatures, DinoFeatures
from model.bank import MemoryBank
from model.config import ConfigError, DetectorConfig, load_config
from model.device_cache import DeviceCache
from model.heads import top_fraction_mean
from model.network import DCPSFR, ReferenceFeatures
from model.preprocess import (
    Geometry,
    above_bit_depth,
    aspect_geometry,
    backbone_batch,
    bit_depth_of,
    frame_size,
    gaussian_smooth,
    letterbox_batch,
    rgb_image,
    square_geometry,
)
from model.records import Mode, Prediction
from model.references import ReferenceSet
from model.runtime import BackboneRuntime, create_runtime
from model.tiling import stitch, tile_boxes
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


PREPROCESS_VERSION = "aspect-v1"  # AnomalyDINO geometry, bit depth, EXIF; older references are refitted


def precision_of(device: torch.device) -> str:
    """The backbones' compute precision on `device` (see Detector._autocast)."""
    return "bf16" if device.type == "cuda" else "fp32"


def feature_fingerprint(cfg: DetectorConfig, random_weights: bool, device: torch.device | None = None) -> str:
    """What reference features depend on: the DINOv2 backbone and input size, the preprocessing, whether the
    weights are random, and the precision and device type they were computed under (bf16 tokens differ)."""
    device = device or torch.device("cpu")
    basis = {
        "dino": cfg.dino.__dict__,
        "random_weights": random_weights,
        "seed": cfg.seed if random_weights else None,
        "preprocess": PREPROCESS_VERSION,
        "precision": precision_of(device),
        "device_type": device.type,
    }
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
        self.fingerprint = feature_fingerprint(self.config, random_weights, device)
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
    def fit_references(
        self, images: Sequence[Image.Image], bit_depth: int | None = None, geometry: Geometry | None = None
    ) -> ReferenceSet:
        """Embed K normal images of one product and build its memory bank.

        The product's backbone geometry is the first reference's (shorter side to the configured size, aspect
        kept); references and frames of another aspect are brought to it (see `frame_geometry`).
        bit_depth: the product's bit depth for high-bit grey data without sBIT; None = the references' maximum
        rounded up to 10/12/14/16 bits (`bit_depth_of`). Stored with the references, applied to every frame.
        geometry: the product's geometry when adding references to an existing product (default: the first's).
        """
        if len(images) == 0:
            raise ValueError("no reference images given")
        bit_depth = bit_depth if bit_depth is not None else bit_depth_of(images)
        rgb = [rgb_image(img, bit_depth) for img in images]
        product = geometry or self.image_geometry(rgb[0])
        patches, classes = [], []
        for start in range(0, len(rgb), FIT_CHUNK):
            chunk = rgb[start : start + FIT_CHUNK]
            dino = self._dino(self._dino_input(chunk, [self.frame_geometry(img, product) for img in chunk]))
            patches.append(dino.patch_tokens.float().cpu())  # (k, Nd, Dd)
            classes.append(dino.cls_token.float().cpu())  # (k, Dd)
        bank_tokens = None
        if self.config.inference.reference_rotations:
            bank_tokens = self._rotated_bank_tokens(rgb, product)  # (K * 8 * Nd, Dd)
        if self.tiled:
            bank_tokens = torch.cat([self._tile_tokens(img, self._tile_geometry(rgb[0])) for img in rgb])
        meta = {
            "created": datetime.now(UTC).isoformat(),
            "image_sizes": [list(frame_size(img)) for img in images],
            "grid": list(product.grid),
            "geometry": {"resized": list(product.resized), "input": list(product.input)},
            "bit_depth": bit_depth,
            "precision": precision_of(self.device),
            "versions": {"torch": torch.__version__, "timm": timm.__version__, "open_clip": open_clip.__version__},
        }
        return self._reference_set(torch.cat(patches), torch.cat(classes), meta, bank_tokens)  # (K, Nd, Dd), (K, Dd)

    def _rotated_bank_tokens(self, images: list[Image.Image], product: Geometry) -> torch.Tensor:
        """Patch tokens of AnomalyDINO's 8 rotations of every reference, for the memory bank only."""
        tokens = []
        for image in images:
            views = rotated_views(image)
            dino = self._dino(self._dino_input(views, [self.frame_geometry(v, product) for v in views]))
            tokens.append(dino.patch_tokens.float().cpu().flatten(0, 1))  # (8 * Nd, Dd)
        return torch.cat(tokens)

    @property
    def tiled(self) -> bool:
        """Tiled mode: training-free only (full mode's heads need one grid per frame)."""
        return self.config.inference.tiles > 1 and self.mode == "training-free"

    def _tiles(self, image: Image.Image) -> tuple[list[Image.Image], list[tuple[int, int, int, int]]]:
        inference = self.config.inference
        boxes = tile_boxes(image.width, image.height, inference.tiles, inference.tile_overlap)
        return [image.crop(box) for box in boxes], boxes

    def _tile_geometry(self, image: Image.Image) -> Geometry:
        tiles, _ = self._tiles(image)
        return self.image_geometry(tiles[0])

    def _tile_tokens(self, image: Image.Image, product: Geometry) -> torch.Tensor:
        """Patch tokens of every tile of one image -> (T * Nd, Dd), on CPU."""
        tiles, _ = self._tiles(image)
        dino = self._dino(self._dino_input(tiles, [self.frame_geometry(t, product) for t in tiles]))
        return dino.patch_tokens.float().cpu().flatten(0, 1)

    def _predict_tiled(self, image: Image.Image, refs: ReferenceSet) -> tuple[float, object]:
        """One frame in tiled mode: score over all tiles' patches, map stitched at the frame's size."""
        tiles, boxes = self._tiles(image)
        product = self._tile_geometry(image)
        dino = self._dino(self._dino_input(tiles, [self.frame_geometry(t, product) for t in tiles]))
        s_cos = 1.0 - refs.bank.max_similarity(dino.patch_tokens).to(self.device)  # (T, Nd)
        score = top_fraction_mean(s_cos.flatten()[None], self.config.inference.top_fraction)[0]
        width, height = frame_size(image)
        scale = min(1.0, self.config.inference.smoothing_max_side / max(width, height))
        work = (max(1, round(height * scale)), max(1, round(width * scale)))
        stitched = stitch(s_cos.view(len(tiles), *product.grid).float(), boxes, work, work[0] / image.height)
        return float(score), self._smoothed(stitched, (width, height), scale)

    def image_geometry(self, image: Image.Image) -> Geometry:
        """AnomalyDINO's geometry for this frame on its own (its camera size, see `aspect_geometry`)."""
        width, height = frame_size(image)
        return aspect_geometry(height, width, self.config.dino.image_size, self.network.dino.patch_size)

    def frame_geometry(self, image: Image.Image, product: Geometry) -> Geometry:
        """The frame's own geometry when it gives the product's grid; else the product's (a plain resize).

        A frame of the references' aspect (any size) keeps its own resize and crop, exactly as AnomalyDINO; one
        of another aspect is resized to the product's resized size, so its grid matches the memory bank's
        positions (needed by ACL) and the map, stretched back over the frame, is in the frame's geometry again.
        """
        own = self.image_geometry(image)
        return own if own.grid == product.grid else product

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
        added = self.fit_references(images, bit_depth=refs.bit_depth, geometry=refs.geometry)  # the product's
        sizes = refs.meta.get("image_sizes", []) + added.meta["image_sizes"]
        patch_tokens = torch.cat([refs.patch_tokens, added.patch_tokens])  # (K + k, Nd, Dd)
        cls_tokens = torch.cat([refs.cls_tokens, added.cls_tokens])  # (K + k, Dd)
        return self._reference_set(patch_tokens, cls_tokens, {**added.meta, "image_sizes": sizes})

    def _reference_set(
        self, patch_tokens: torch.Tensor, cls_tokens: torch.Tensor, meta: dict, bank_tokens: torch.Tensor | None = None
    ) -> ReferenceSet:
        inference = self.config.inference
        tokens = bank_tokens if bank_tokens is not None else patch_tokens.flatten(0, 1)  # (M, Dd)
        bank = MemoryBank.build(tokens, inference.bank_budget, inference.bank_reduction)
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
        """Backbone features of a training batch at the square training geometry (batches mix aspects there)."""
        size = self.config.dino.image_size
        rgb = [rgb_image(img).resize((size, size), Image.Resampling.BICUBIC) for img in images]  # squashed
        square = square_geometry(size, self.network.dino.patch_size)
        dino = self._dino(self._dino_input(rgb, [square] * len(rgb)))
        return dino, (self._clip(self._clip_input(rgb)[0]) if with_clip else None)

    def load_references(self, folder: str | Path) -> ReferenceSet:
        """A ReferenceSet saved by `ReferenceSet.save`, checked against this detector.

        Raises FileNotFoundError (not a saved set) or ReferenceMismatchError (another format, config or features).
        """
        refs = ReferenceSet.load(folder)
        refs.check_compatible(self.config.name, self.fingerprint)
        return refs

    # --- prediction -----------------------------------------------------------------------------------------

    @torch.inference_mode()
    def predict(self, images: Sequence[Image.Image], refs: ReferenceSet) -> list[Prediction]:
        """Scores and anomaly maps (each at its frame's own H x W) for a batch of one product's images."""
        refs.check_compatible(self.config.name, self.fingerprint)
        if len(images) == 0:
            raise ValueError("no images given")
        timings: dict[str, float] = {}
        product = refs.geometry
        self._log_bit_depth_once(refs, images)
        if self.tiled:
            with _timed(timings, "tiled", self.device):
                results = [self._predict_tiled(rgb_image(_checked(img), refs.bit_depth), refs) for img in images]
            return [
                Prediction(
                    score=s, anomaly_map=m, mode=self.mode, random_weights=self.random_weights, timings_ms=timings
                )
                for s, m in results
            ]
        with _timed(timings, "preprocess", self.device):
            rgb = [rgb_image(_checked(img), refs.bit_depth) for img in images]
            geometries = [self.frame_geometry(img, product) for img in rgb]
            self._log_geometry_once(refs, rgb, geometries)
            dino_input = self._dino_input(rgb, geometries)  # (B, 3, Hd, Wd)
            clip_input = self._clip_input(rgb) if self.mode == "full" else None
        with _timed(timings, "dino", self.device):
            dino = self._dino(dino_input)
        clip = None
        if clip_input is not None:
            with _timed(timings, "clip", self.device):
                clip = (self._clip(clip_input[0]), clip_input[1])
        with _timed(timings, "bank_search", self.device):
            s_cos = 1.0 - refs.bank.max_similarity(dino.patch_tokens, self.device_cache).to(self.device)  # (B, Nd)
        with _timed(timings, "heads", self.device):
            grid_maps, raw_scores = self._score(dino, clip, s_cos, refs, product.grid)  # (B, hd, wd), (B,)
        with _timed(timings, "postprocess", self.device):
            maps = self._frame_maps(grid_maps, [frame_size(img) for img in images])
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
        grid = refs.geometry.grid
        sizes = refs.meta.get("image_sizes") or [list(refs.geometry.input)[::-1]] * refs.n_references
        predictions = []
        for held_out in range(refs.n_references):
            others = self.subset_references(refs, [i for i in range(refs.n_references) if i != held_out])
            tokens = refs.patch_tokens[held_out : held_out + 1].to(self.device)  # (1, Nd, Dd)
            s_cos = 1.0 - others.bank.max_similarity(tokens).to(self.device)  # (1, Nd)
            width, height = sizes[held_out]
            anomaly_map = self._frame_maps(s_cos.view(1, *grid), [(width, height)])[0]  # (H, W)
            score = float(top_fraction_mean(s_cos, self.config.inference.top_fraction)[0])
            predictions.append(Prediction(score, anomaly_map, "training-free", self.random_weights))
        return predictions

    def _log_bit_depth_once(self, refs: ReferenceSet, images: Sequence[Image.Image]) -> None:
        if refs.bit_depth_logged:  # checking costs a pass over each 16-bit frame; once logged, no more
            return
        for image in images:
            highest = above_bit_depth(image, refs.bit_depth)
            if highest is not None:
                refs.bit_depth_logged = True
                log.warning(
                    "a frame has values up to %d, above its product's bit depth of %d bits (0..%d): they are clipped "
                    "white; refit the references with a larger bit_depth (logged once per product)",
                    highest,
                    refs.bit_depth,
                    2**refs.bit_depth - 1,
                )
                return

    def _log_geometry_once(self, refs: ReferenceSet, images: list[Image.Image], geometries: list[Geometry]) -> None:
        product = refs.geometry
        for image, geometry in zip(images, geometries, strict=True):
            if geometry == product and self.image_geometry(image).grid != product.grid and not refs.geometry_logged:
                refs.geometry_logged = True
                width, height = frame_size(image)
                log.warning(
                    "a %d x %d frame has another aspect than its product's references (grid %s): it is resized to "
                    "the references' %s input, and its map stretched back over the frame (logged once per product)",
                    width,
                    height,
                    "x".join(map(str, product.grid)),
                    "x".join(map(str, product.resized[::-1])),
                )

    def _score(
        self,
        dino: DinoFeatures,
        clip: tuple[ClipFeatures, tuple[int, int]] | None,
        s_cos: torch.Tensor,
        refs: ReferenceSet,
        grid: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b = s_cos.shape[0]
        if self.mode == "training-free":
            if self.config.inference.background_masking:
                foreground = torch.stack([background_mask(t, grid) for t in dino.patch_tokens]).to(s_cos.device)
                s_cos = s_cos * foreground  # (B, Nd): background patches score 0, as AnomalyDINO
            grid_map = s_cos.view(b, *grid)  # (B, hd, wd)
            return grid_map, top_fraction_mean(s_cos, self.config.inference.top_fraction)
        assert clip is not None
        clip_features, content = clip
        patch_tokens, cls_tokens = refs.tokens_on(self.device, self.device_cache)
        reference = ReferenceFeatures(patch_tokens[None], cls_tokens[None])  # (1, K, Nd, Dd), (1, K, Dd)
        out = self.network.run_heads(
            clip_features, dino, reference, s_cos, self._cached_text_features(), grid, clip_content=content
        )
        return out.s_hat, out.y_hat  # the logit y: predict() reports sigmoid(y) as the score and y as the logit

    def _cached_text_features(self) -> torch.Tensor:
        if self._text_features is None:
            self._text_features = self.network.text_features()  # (2, Dt): fixed once the heads are trained
        return self._text_features

    def _dino_input(self, images: list[Image.Image], geometries: list[Geometry]) -> torch.Tensor:
        cfg = self.config.dino
        return backbone_batch(images, geometries, cfg.mean, cfg.std, self.device)  # (B, 3, Hd, Wd)

    def _clip_input(self, images: list[Image.Image]) -> tuple[torch.Tensor, tuple[int, int]]:
        """The frames letterboxed into CLIP's square input (B, 3, Sc, Sc), and the content's (h, w) in pixels."""
        cfg = self.config.clip
        return letterbox_batch(images, cfg.image_size, cfg.mean, cfg.std, self.device)

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

    def _frame_maps(self, grid_maps: torch.Tensor, sizes: list[tuple[int, int]]) -> list:
        """Grid maps (B, hd, wd) -> each frame's (H, W) float32 numpy map, as AnomalyDINO's `dists2map`.

        Bilinear upsampling over the whole frame, then a Gaussian of `gaussian_sigma` px at the frame's own
        resolution. Frames longer than `smoothing_max_side` are smoothed at that size (sigma scaled alike) and
        upsampled after, which bounds the memory of the blur; the map is still the frame's H x W.
        """
        inference = self.config.inference
        out = []
        for grid_map, (width, height) in zip(grid_maps.float(), sizes, strict=True):
            scale = min(1.0, inference.smoothing_max_side / max(width, height))
            work = (max(1, round(height * scale)), max(1, round(width * scale)))
            upsampled = F.interpolate(grid_map[None, None], size=work, mode="bilinear", align_corners=False)[0, 0]
            out.append(self._smoothed(upsampled, (width, height), scale))  # (H, W)
        return out

    def _smoothed(self, work_map: torch.Tensor, size: tuple[int, int], scale: float):
        """A (h, w) map at `scale` x the frame -> Gaussian there -> the frame's (H, W) float32 numpy array."""
        width, height = size
        smooth = gaussian_smooth(work_map[None], self.config.inference.gaussian_sigma * scale)  # (1, h, w)
        if tuple(smooth.shape[-2:]) != (height, width):
            smooth = F.interpolate(smooth[None], size=(height, width), mode="bilinear", align_corners=False)[0]
        return smooth[0].cpu().numpy().astype("float32", copy=False)  # (H, W)


def _checked(image: Image.Image) -> Image.Image:
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected PIL images, got {type(image).__name__}")
    return image


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


def fit_pos_embed(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A timm ViT state dict with its position embeddings resampled to `model`'s grid when they differ.

    Variants with registers (`*_reg4_dinov2`) embed no class/register positions (`no_embed_class`), so only
    patch positions are resampled there; plain DINOv2 carries one class position in front.
    """
    if state["pos_embed"].shape == model.pos_embed.shape:
        return state
    embedded_prefix = 0 if model.no_embed_class else model.num_prefix_tokens
    resampled = resample_abs_pos_embed(
        state["pos_embed"], new_size=list(model.patch_embed.grid_size), num_prefix_tokens=embedded_prefix
    )
    return {**state, "pos_embed": resampled}


def _load_backbones(network: DCPSFR, cfg: DetectorConfig, weights: Path) -> None:
    """Verified local files only; position embeddings resampled when the configured size differs."""
    dino_state = read_state_dict(verified_weight_file(cfg.name, "dino", weights))
    model = network.dino.model
    dino_state = fit_pos_embed(dino_state, model)
    model.load_state_dict(dino_state, strict=True)
    if network.clip is not None:
        clip_state = read_state_dict(verified_weight_file(cfg.name, "clip", weights))
        resize_pos_embed(clip_state, network.clip.model)
        network.clip.model.load_state_dict(clip_state, strict=True)
