"""Backbone features for training: computed once per image file at the square training geometry, kept on disk
(training reads them every epoch)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from model import Detector, Frame
from model.backbones import ClipFeatures, DinoFeatures
from model.files import atomic_path
from model.geometry import square_geometry
from model.preprocess import geometry_pixels, resized_pixels, stacked, to_backbone_input, to_letterboxed_input
from model.runtime.export import weight_checksum
from model.training.data.datasets import load_image

BATCH = 8


def features_id(detector: Detector) -> str:
    """What cached features depend on: the DINOv2 fingerprint, the CLIP config, and both towers' weights."""
    network = detector.network
    parts = {
        "fingerprint": detector.fingerprint,
        "clip": network.cfg.clip.__dict__ if network.clip is not None else None,
        "dino_weights": weight_checksum(network.dino),
        "clip_weights": weight_checksum(network.clip.model.visual) if network.clip is not None else None,
        "geometry": "square-training",  # see embed
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@torch.inference_mode()
def embed(
    detector: Detector, images: Sequence[Image.Image | Frame], with_clip: bool
) -> tuple[DinoFeatures, ClipFeatures | None]:
    """Backbone features of a training batch, every image squashed to the square training geometry (batches mix
    aspects there): DINOv2 (B, Nd, Dd) / (B, Dd) and, `with_clip`, CLIP over its whole square input."""
    config = detector.config
    size = config.dino.image_size
    rgb = [Frame.of(image).rgb().resize((size, size), Image.Resampling.BICUBIC) for image in images]  # squashed
    square = square_geometry(size, detector.patch_size)
    pixels = stacked([geometry_pixels(image, square) for image in rgb])  # (B, S, S, 3)
    dino = detector.encode_dino(to_backbone_input(pixels, config.dino.mean, config.dino.std, detector.device))
    if not with_clip:
        return dino, None
    side = config.clip.image_size
    contents = stacked([resized_pixels(image, (side, side)) for image in rgb])  # (B, Sc, Sc, 3)
    clip_input = to_letterboxed_input(contents, side, config.clip.mean, config.clip.std, detector.device)
    return dino, detector.encode_clip(clip_input)


class FeatureCache:
    """One safetensors file per image (fp16), keyed by path, size, mtime and the detector's feature layout."""

    def __init__(self, folder: Path, detector: Detector) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.detector = detector
        self.with_clip = detector.network.clip is not None
        self.features_id = features_id(detector)

    def key(self, path: Path) -> Path:
        """The cache file of image `path`: a sha1 of its resolved path, size, mtime and the features id."""
        stat = Path(path).stat()
        basis = f"{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{self.features_id}"
        return self.folder / f"{hashlib.sha1(basis.encode()).hexdigest()}.safetensors"

    def ensure(self, paths: Sequence[Path], desc: str = "caching features") -> None:
        """Embed every path not cached yet, in batches, with a progress bar."""
        todo = sorted({Path(p) for p in paths if not self.key(p).is_file()})
        with tqdm(total=len(todo), desc=desc, unit="img", disable=not todo) as bar:
            for start in range(0, len(todo), BATCH):
                chunk = todo[start : start + BATCH]
                dino, clip = embed(self.detector, [load_image(p) for p in chunk], with_clip=self.with_clip)
                for i, path in enumerate(chunk):
                    self._write(path, dino, clip, i)
                bar.update(len(chunk))

    def _write(self, path: Path, dino: DinoFeatures, clip: ClipFeatures | None, i: int) -> None:
        tensors = {"dino_patch": dino.patch_tokens[i], "dino_cls": dino.cls_token[i]}
        if clip is not None:
            tensors |= {"clip_layers": clip.layer_tokens[i], "clip_embedding": clip.image_embedding[i]}
        with atomic_path(self.key(path)) as tmp:  # a crash never leaves a half-written cache entry
            save_file({k: v.detach().half().cpu().contiguous() for k, v in tensors.items()}, tmp)

    def load(self, paths: Sequence[Path], device: torch.device) -> dict[str, torch.Tensor]:
        """Stacked float32 features of `paths`: dino_patch (N, Nd, Dd), dino_cls (N, Dd), clip_* when present."""
        entries = [load_file(self.key(p)) for p in paths]
        return {name: torch.stack([e[name] for e in entries]).to(device).float() for name in entries[0]}
