"""Detector: fit a product's references; predict = prepare -> forward -> maps, each stage callable on its own.

The stages let a server put each on its own thread: `prepare` (CPU: pixels to backbone geometry) in a decode
pool, `forward` (the backbones, the memory bank, the heads) on the one thread that owns the model, `maps` (grid
maps to frame maps) in an encode pool. `predict` runs the three in turn. Build one with `create_detector`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import open_clip
import timm
import torch
from PIL import Image

from model.backbones import ClipFeatures, DinoFeatures
from model.bank import MemoryBank
from model.config import DetectorConfig
from model.device_cache import DeviceCache
from model.extras.anomalydino import background_mask, rotated_views
from model.frame import Frame, bit_depth_of, frames_of
from model.geometry import Geometry, aspect_geometry, matching_geometry
from model.heads import top_fraction_mean
from model.network import DCPSFR, ReferenceFeatures
from model.notices import OnceLog
from model.postprocess import frame_map, tiled_frame_map
from model.preprocess import (
    PrepareSpec,
    clip_content,
    geometry_pixels,
    prepare,
    stacked,
    tiles_of,
    to_backbone_input,
    to_letterboxed_input,
)
from model.records import GridScores, Mode, Prediction, PreparedBatch, PreparedFrame
from model.references import ReferenceSet, feature_fingerprint, precision_of
from model.runtime import BackboneRuntime

FIT_CHUNK = 8  # references are embedded this many at a time

ImageLike = Frame | Image.Image


class Detector:
    """DCP-SFR inference: `fit_references(images)` once per product, then `predict(images, refs)`."""

    def __init__(
        self,
        network: DCPSFR,
        device: torch.device,
        random_weights: bool,
        heads_info: dict,
        runtime: BackboneRuntime,
        device_cache: DeviceCache,
    ) -> None:
        self.network = network.to(device).eval()
        self.runtime = runtime
        self.config: DetectorConfig = network.cfg
        self.device = device
        self.random_weights = random_weights
        self.heads_info = heads_info
        self.mode: Mode = "full" if network.heads is not None else "training-free"
        self.fingerprint = feature_fingerprint(self.config, random_weights, device)
        self.device_cache = device_cache  # per-product device copies (reference tokens, banks), an LRU by bytes
        self._text_features: torch.Tensor | None = None
        self._notices = OnceLog()

    def __repr__(self) -> str:
        return (
            f"Detector(config={self.config.name!r}, mode={self.mode!r}, device={self.device}, "
            f"runtime={self.runtime.name!r}, random_weights={self.random_weights})"
        )

    @property
    def tiled(self) -> bool:
        """Tiled mode: training-free only (full mode's heads need one grid per frame)."""
        return self.config.inference.tiles > 1 and self.mode == "training-free"

    @property
    def patch_size(self) -> int:
        """DINOv2's patch size in pixels."""
        return self.network.dino.patch_size

    # --- references -----------------------------------------------------------------------------------------

    @torch.inference_mode()
    def fit_references(
        self, images: Sequence[ImageLike], bit_depth: int | None = None, geometry: Geometry | None = None
    ) -> ReferenceSet:
        """Embed K normal images of one product and build its memory bank.

        The product's backbone geometry is the first reference's (shorter side to the configured size, aspect
        kept). Training-free mode embeds every reference at its own aspect, as AnomalyDINO; full mode brings a
        reference of another aspect to the product's grid (see model.geometry.matching_geometry).
        bit_depth: the product's bit depth for high-bit grey data without sBIT; None = the references' maximum
        rounded up to 10/12/14/16 bits (`bit_depth_of`). Stored with the references, applied to every frame.
        geometry: the product's geometry when adding references to an existing product (default: the first's).
        Raises ValueError for no images, or grey data with no true 8- or 16-bit reading.
        """
        if len(images) == 0:
            raise ValueError("no reference images given")
        frames = frames_of(images)
        bit_depth = bit_depth if bit_depth is not None else bit_depth_of(frames)
        rgb = [frame.rgb(bit_depth) for frame in frames]
        product = geometry or self.own_geometry(*frames[0].camera_size)
        geometries = [self.input_geometry(*frame.camera_size, product) for frame in frames]
        embedded = self._embedded(rgb, geometries)  # per reference (Nd_k, Dd), (Dd,)
        bank_tokens = None
        if self.config.inference.reference_rotations:
            bank_tokens = self._rotated_bank_tokens(rgb, product)  # (K * 8 * Nd, Dd)
        if self.tiled:
            bank_tokens = self._tiled_bank_tokens(rgb)  # (K * T * Nd, Dd)
        meta = {
            "created": datetime.now(UTC).isoformat(),
            "image_sizes": [list(frame.camera_size) for frame in frames],
            "grid": list(product.grid),
            "geometry": {"resized": list(product.resized), "input": list(product.input)},
            "grids": [list(g.grid) for g in geometries],
            "bit_depth": bit_depth,
            "precision": precision_of(self.device),
            "versions": {"torch": torch.__version__, "timm": timm.__version__, "open_clip": open_clip.__version__},
        }
        patch_tokens = torch.cat([patch for patch, _ in embedded])  # (N, Dd)
        return self._reference_set(patch_tokens, torch.stack([cls for _, cls in embedded]), meta, bank_tokens)

    def own_geometry(self, width: int, height: int) -> Geometry:
        """AnomalyDINO's geometry for a W x H frame on its own (see model.geometry.aspect_geometry)."""
        return aspect_geometry(height, width, self.config.dino.image_size, self.patch_size)

    def input_geometry(self, width: int, height: int, product: Geometry) -> Geometry:
        """How a W x H frame of a product reaches DINOv2: at its own aspect in training-free mode (the memory bank
        has no positions), matched to the product's grid in full mode (ACL attends position by position)."""
        own = self.own_geometry(width, height)
        return matching_geometry(own, product) if self.mode == "full" else own

    def _embedded(
        self, images: Sequence[Image.Image], geometries: Sequence[Geometry]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each image's DINOv2 (patch tokens (Nd_k, Dd), class token (Dd,)) on the CPU, float32, at its geometry;
        images of one input size pass the backbone together, FIT_CHUNK at a time."""
        groups: dict[tuple[int, int], list[int]] = {}
        for i, geometry in enumerate(geometries):
            groups.setdefault(geometry.input, []).append(i)
        out: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for members in groups.values():
            for start in range(0, len(members), FIT_CHUNK):
                chunk = members[start : start + FIT_CHUNK]
                dino = self._dino_tokens([images[i] for i in chunk], [geometries[i] for i in chunk])
                for i, patch, cls in zip(
                    chunk, dino.patch_tokens.float().cpu(), dino.cls_token.float().cpu(), strict=True
                ):
                    out[i] = (patch, cls)  # (Nd_k, Dd), (Dd,)
        return [out[i] for i in range(len(images))]

    def _rotated_bank_tokens(self, images: list[Image.Image], product: Geometry) -> torch.Tensor:
        """Patch tokens of AnomalyDINO's 8 rotations of every reference, for the memory bank only."""
        tokens = []
        for image in images:
            views = rotated_views(image)
            geometries = [self.input_geometry(*view.size, product) for view in views]
            tokens += [patch for patch, _ in self._embedded(views, geometries)]  # 8 x (Nd, Dd)
        return torch.cat(tokens)  # (K * 8 * Nd, Dd)

    def _tiled_bank_tokens(self, images: list[Image.Image]) -> torch.Tensor:
        """Patch tokens of every tile of every reference, each reference's tiles matched to its first tile."""
        inference = self.config.inference
        tokens = []
        for image in images:
            tiles, _ = tiles_of(image, inference.tiles, inference.tile_overlap)
            first = self.own_geometry(*tiles[0].size)
            matched = [matching_geometry(self.own_geometry(*tile.size), first) for tile in tiles]  # +-1 px tiles
            tokens.append(self._dino_tokens(tiles, matched).patch_tokens.float().cpu().flatten(0, 1))  # (T * Nd, Dd)
        return torch.cat(tokens)

    def subset_references(self, refs: ReferenceSet, indices: Sequence[int]) -> ReferenceSet:
        """The references at `indices` with their own bank, without a backbone pass (leave-one-out calibration)."""
        refs.check_compatible(self.config.name, self.fingerprint)
        keep = [int(i) for i in indices]
        sizes, grids, tokens = refs.meta.get("image_sizes"), refs.grids, refs.reference_tokens()
        meta = {**refs.meta, "grids": [list(grids[i]) for i in keep]}
        if sizes:
            meta["image_sizes"] = [sizes[i] for i in keep]
        return self._reference_set(torch.cat([tokens[i] for i in keep]), refs.cls_tokens[keep], meta)

    def extend_references(self, refs: ReferenceSet, images: Sequence[ImageLike]) -> ReferenceSet:
        """`refs` plus `images` as further references: only the new images pass the backbone."""
        refs.check_compatible(self.config.name, self.fingerprint)
        added = self.fit_references(images, bit_depth=refs.bit_depth, geometry=refs.geometry)  # the product's
        sizes = refs.meta.get("image_sizes", []) + added.meta["image_sizes"]
        grids = [list(g) for g in refs.grids + added.grids]
        patch_tokens = torch.cat([refs.patch_tokens, added.patch_tokens])  # (N + n, Dd)
        cls_tokens = torch.cat([refs.cls_tokens, added.cls_tokens])  # (K + k, Dd)
        return self._reference_set(patch_tokens, cls_tokens, {**added.meta, "image_sizes": sizes, "grids": grids})

    def load_references(self, folder: str | Path) -> ReferenceSet:
        """A ReferenceSet saved by `ReferenceSet.save`, checked against this detector.

        Raises FileNotFoundError (not a saved set) or ReferenceMismatchError (another format, config or features).
        """
        refs = ReferenceSet.load(folder)
        refs.check_compatible(self.config.name, self.fingerprint)
        return refs

    def _reference_set(
        self, patch_tokens: torch.Tensor, cls_tokens: torch.Tensor, meta: dict, bank_tokens: torch.Tensor | None = None
    ) -> ReferenceSet:
        inference = self.config.inference
        tokens = bank_tokens if bank_tokens is not None else patch_tokens  # (M, Dd)
        bank = MemoryBank.build(tokens, inference.bank_budget, inference.bank_reduction)
        return ReferenceSet(self.config.name, self.fingerprint, patch_tokens, cls_tokens, bank, meta)

    @torch.inference_mode()
    def held_out_predictions(self, refs: ReferenceSet) -> list[Prediction]:
        """Training-free leave-one-out from the cached tokens: each reference's patch tokens against the bank of
        the other K-1 (no backbone pass at all). Needs K >= 2. Maps at each reference's own size when known."""
        assert refs.n_references >= 2, "leave-one-out needs two or more references"
        grids, tokens = refs.grids, refs.reference_tokens()
        sizes = refs.meta.get("image_sizes") or [[w * self.patch_size, h * self.patch_size] for h, w in grids]
        predictions = []
        for held_out in range(refs.n_references):
            others = self.subset_references(refs, [i for i in range(refs.n_references) if i != held_out])
            own = tokens[held_out][None].to(self.device)  # (1, Nd, Dd)
            s_cos = 1.0 - others.bank.max_similarity(own).to(self.device)  # (1, Nd)
            anomaly_map = frame_map(s_cos.view(*grids[held_out]), tuple(sizes[held_out]), self.config.inference)
            score = float(top_fraction_mean(s_cos, self.config.inference.top_fraction)[0])
            predictions.append(Prediction(score, anomaly_map, "training-free", self.random_weights))
        return predictions

    # --- the three stages -----------------------------------------------------------------------------------

    def predict(self, images: Sequence[ImageLike], refs: ReferenceSet) -> list[Prediction]:
        """Scores and anomaly maps (each at its frame's own camera H x W) for a batch of one product's images:
        `maps(forward(prepare(images, refs), refs))`. Raises ValueError for no images or unreadable grey data,
        ReferenceMismatchError for references of another config, TypeError for something not an image."""
        batch = self.prepare(images, refs)
        return self.maps(batch, self.forward(batch, refs))

    def prepare(self, images: Sequence[ImageLike], refs: ReferenceSet) -> PreparedBatch:
        """Stage 1 (CPU, any thread): each frame's pixels at its backbone geometry (training-free: its own aspect;
        full: the product's grid), 8-bit, tiled in tiled mode, letterboxed for CLIP in full mode. Frames above the
        product's bit depth or of another aspect than its references carry a notice (each prediction's `warnings`),
        also logged once per product. Raises ValueError for no images or grey data with no true 8- or 16-bit
        reading."""
        refs.check_compatible(self.config.name, self.fingerprint)
        if len(images) == 0:
            raise ValueError("no images given")
        frames = frames_of(images)
        start = time.perf_counter()
        prepared = prepare(frames, self._prepare_spec(refs))
        self._notices.warn(refs.cache_key, [notice for frame in prepared for notice in frame.notices])
        return PreparedBatch(tuple(prepared), {"preprocess": _ms_since(start)})

    def _prepare_spec(self, refs: ReferenceSet) -> PrepareSpec:
        inference = self.config.inference
        full, product = self.mode == "full", refs.geometry
        return PrepareSpec(
            product=product,
            bit_depth=refs.bit_depth,
            short_side=self.config.dino.image_size,
            patch=self.patch_size,
            common_grid=full,
            reference_sizes=tuple(refs.image_sizes),
            clip_content=clip_content(product, self.config.clip.image_size) if full else None,
            tiles=inference.tiles if self.tiled else 1,
            tile_overlap=inference.tile_overlap,
        )

    @torch.inference_mode()
    def forward(self, batch: PreparedBatch, refs: ReferenceSet) -> GridScores:
        """Stage 2 (the thread that owns the model): the backbones, the memory-bank search and (full mode) the heads
        on prepared frames of one product -> grid maps and raw image scores. Raises ReferenceMismatchError."""
        refs.check_compatible(self.config.name, self.fingerprint)
        timings: dict[str, float] = {}
        with _timed(timings, "dino", self.device):
            dino = self._dino_of_frames(batch.frames)  # per frame (T, Nd, Dd) patch tokens, (T, Dd) class tokens
        with _timed(timings, "bank_search", self.device):
            s_cos = self._distances(refs, [patch for patch, _ in dino])  # per frame (T, Nd)
        if self.mode == "training-free":
            with _timed(timings, "heads", self.device):
                grid_maps, raw = self._training_free_scores(batch.frames, dino, s_cos)
        else:
            with _timed(timings, "clip", self.device):
                clip = self._clip_of_frames(batch.frames)
            with _timed(timings, "heads", self.device):
                grid_maps, raw = self._full_scores(dino, clip, s_cos, refs, batch.frames[0].clip)
        return GridScores(grid_maps, raw.float().cpu(), self.mode, timings)

    @torch.inference_mode()
    def maps(self, batch: PreparedBatch, scores: GridScores) -> list[Prediction]:
        """Stage 3 (any thread): grid maps -> each frame's (H, W) anomaly map (bilinear, Gaussian), and its score
        (full mode: sigmoid of the logit)."""
        start = time.perf_counter()
        inference = self.config.inference
        maps = []
        for frame, grid_map in zip(batch.frames, scores.grid_maps, strict=True):
            if frame.tiles is not None:
                maps.append(tiled_frame_map(grid_map, frame.tiles, frame.pixel_size, frame.camera_size, inference))
            else:
                maps.append(frame_map(grid_map[0], frame.camera_size, inference))  # (H, W)
        full = self.mode == "full"
        logits = scores.raw_scores.tolist() if full else [None] * len(maps)
        values = (torch.sigmoid(scores.raw_scores) if full else scores.raw_scores).tolist()
        timings = {**batch.timings_ms, **scores.timings_ms, "postprocess": _ms_since(start)}
        return [
            Prediction(s, m, self.mode, self.random_weights, timings, logit=y, notices=f.notices)
            for s, m, y, f in zip(values, maps, logits, batch.frames, strict=True)
        ]

    def _dino_of_frames(self, frames: Sequence[PreparedFrame]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """DINOv2 tokens of each frame's T inputs; frames of one input size pass the backbone together."""
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, frame in enumerate(frames):
            groups.setdefault(tuple(frame.dino.shape[1:]), []).append(i)
        out: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for members in groups.values():
            pixels = torch.cat([frames[i].dino for i in members])  # (N, Hd, Wd, 3) uint8
            features = self.encode_dino(self._dino_input(pixels))
            counts = [frames[i].dino.shape[0] for i in members]
            for i, patch, cls in zip(
                members, features.patch_tokens.split(counts), features.cls_token.split(counts), strict=True
            ):
                out[i] = (patch, cls)  # (T, Nd, Dd), (T, Dd)
        return [out[i] for i in range(len(frames))]

    def _distances(self, refs: ReferenceSet, patch_tokens: list[torch.Tensor]) -> list[torch.Tensor]:
        """1 - max cosine of every patch to the memory bank, in one search: per frame (T, Nd) from (T, Nd, Dd)."""
        flat = torch.cat([tokens.flatten(0, 1) for tokens in patch_tokens])  # (sum T * Nd, Dd)
        distances = 1.0 - refs.bank.max_similarity(flat, self.device_cache).to(self.device)  # (sum T * Nd,)
        sizes = [tokens.shape[0] * tokens.shape[1] for tokens in patch_tokens]
        return [d.view(t.shape[:2]) for d, t in zip(distances.split(sizes), patch_tokens, strict=True)]

    def _clip_of_frames(self, frames: Sequence[PreparedFrame]) -> ClipFeatures:
        cfg = self.config.clip
        contents = torch.stack([frame.clip for frame in frames])  # (B, h, w, 3) uint8
        return self.encode_clip(to_letterboxed_input(contents, cfg.image_size, cfg.mean, cfg.std, self.device))

    def _training_free_scores(
        self,
        frames: Sequence[PreparedFrame],
        dino: list[tuple[torch.Tensor, torch.Tensor]],
        s_cos: list[torch.Tensor],
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        inference = self.config.inference
        grid_maps, raw = [], []
        for frame, (patch, _), distances in zip(frames, dino, s_cos, strict=True):
            if inference.background_masking and frame.tiles is None:
                foreground = background_mask(patch[0], frame.grid).to(distances.device)  # (Nd,)
                distances = distances * foreground  # background patches score 0, as AnomalyDINO
            grid_maps.append(distances.view(-1, *frame.grid))  # (T, hd, wd)
            raw.append(top_fraction_mean(distances.flatten()[None], inference.top_fraction)[0])  # over all T inputs
        return tuple(grid_maps), torch.stack(raw)  # (B,)

    def _full_scores(
        self,
        dino: list[tuple[torch.Tensor, torch.Tensor]],
        clip: ClipFeatures,
        s_cos: list[torch.Tensor],
        refs: ReferenceSet,
        content: torch.Tensor | None,
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        grid = refs.geometry.grid
        features = DinoFeatures(torch.cat([p for p, _ in dino]), torch.cat([c for _, c in dino]))  # (B, Nd, Dd)
        patch_tokens, cls_tokens = refs.tokens_on(self.device, self.device_cache)
        reference = ReferenceFeatures(patch_tokens[None], cls_tokens[None])  # (1, K, Nd, Dd), (1, K, Dd)
        content_hw = None if content is None else (content.shape[0], content.shape[1])
        out = self.network.run_heads(
            clip, features, reference, torch.cat(s_cos), self._cached_text_features(), grid, clip_content=content_hw
        )
        return tuple(out.s_hat[:, None]), out.y_hat  # (B, 1, hd, wd) per frame, the logit y (B,)

    def _cached_text_features(self) -> torch.Tensor:
        if self._text_features is None:
            self._text_features = self.network.text_features()  # (2, Dt): fixed once the heads are trained
        return self._text_features

    # --- the backbones --------------------------------------------------------------------------------------

    def encode_dino(self, images: torch.Tensor) -> DinoFeatures:
        """DINOv2 features of (B, 3, Hd, Wd) normalised images (bf16 autocast on CUDA)."""
        with self._autocast():
            return self.runtime.dino(images)

    def encode_clip(self, images: torch.Tensor) -> ClipFeatures:
        """CLIP features of (B, 3, Sc, Sc) normalised images (bf16 autocast on CUDA); full mode only."""
        with self._autocast():
            return self.runtime.clip(images)

    def _dino_input(self, pixels: torch.Tensor) -> torch.Tensor:
        cfg = self.config.dino
        return to_backbone_input(pixels, cfg.mean, cfg.std, self.device)  # (B, 3, Hd, Wd)

    def _dino_tokens(self, images: Sequence[Image.Image], geometries: Sequence[Geometry]) -> DinoFeatures:
        pixels = stacked([geometry_pixels(image, g) for image, g in zip(images, geometries, strict=True)])
        return self.encode_dino(self._dino_input(pixels))

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()


def _ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)


@contextlib.contextmanager
def _timed(timings: dict[str, float], stage: str, device: torch.device) -> Iterator[None]:
    start = time.perf_counter()
    yield
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    timings[stage] = _ms_since(start)
