"""ReferenceSet: a product's normal reference features and memory bank; saves to and loads from a folder."""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from model.bank import MemoryBank
from model.config import DetectorConfig
from model.device_cache import DeviceCache
from model.geometry import Geometry

FORMAT_VERSION = 2  # 2: patch tokens of all references in one (N, Dd) tensor, each on its own grid
TENSORS_FILE = "features.safetensors"
BANK_FILE = "bank.npy"
META_FILE = "meta.json"
PREPROCESS_VERSION = "hub-pos-v2"  # AnomalyDINO geometry, hub position embeddings; older references are refitted
_KEYS = itertools.count()  # cache keys: unique per object, never reused (unlike id())


def precision_of(device: torch.device) -> str:
    """The backbones' compute precision on `device`: bf16 autocast on CUDA, else fp32."""
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


class ReferenceMismatchError(ValueError):
    """References built by another config (or another feature layout) than the detector's."""


@dataclass
class ReferenceSet:
    """Product-agnostic features of K normal references, plus the memory bank built from them.

    Reference k's patch tokens lie on its grid `grids[k]` (meta "grids"): in training-free mode each reference's
    own aspect, in full mode the product's grid for all. Without "grids" in meta, every reference is on the product's.
    """

    config_name: str
    fingerprint: str  # what the features depend on: backbones, sizes, widths
    patch_tokens: torch.Tensor  # (N, Dd) DINOv2 patch tokens of reference 0, then 1, ... (N = sum of h_k * w_k)
    cls_tokens: torch.Tensor  # (K, Dd) DINOv2 class tokens
    bank: MemoryBank
    meta: dict[str, Any] = field(default_factory=dict)
    cache_key: int = field(default_factory=lambda: next(_KEYS), init=False, repr=False, compare=False)

    @property
    def geometry(self) -> Geometry:
        """The product's backbone geometry, fixed by its references (see Detector.fit_references)."""
        resized, crop = self.meta["geometry"]["resized"], self.meta["geometry"]["input"]
        return Geometry(resized=tuple(resized), input=tuple(crop), grid=tuple(self.meta["grid"]))

    @property
    def grids(self) -> list[tuple[int, int]]:
        """Each reference's (h, w) patch grid, in order."""
        grids = self.meta.get("grids")
        return [tuple(g) for g in grids] if grids is not None else [self.geometry.grid] * self.n_references

    @property
    def image_sizes(self) -> list[tuple[int, int]]:
        """Each reference's camera (W, H) (from its grid when not recorded: the aspect, not the size)."""
        sizes = self.meta.get("image_sizes")
        return [tuple(s) for s in sizes] if sizes else [(w, h) for h, w in self.grids]

    def reference_tokens(self) -> list[torch.Tensor]:
        """Each reference's patch tokens (h_k * w_k, Dd), in order."""
        return list(self.patch_tokens.split([h * w for h, w in self.grids]))

    def stacked_tokens(self) -> torch.Tensor:
        """(K, Nd, Dd) patch tokens; raises ValueError unless every reference is on one grid (as in full mode)."""
        if len(set(self.grids)) > 1:
            raise ValueError(f"references on several grids {sorted(set(self.grids))} cannot be stacked")
        return self.patch_tokens.view(self.n_references, -1, self.patch_tokens.shape[-1])  # (K, Nd, Dd)

    @property
    def bit_depth(self) -> int | None:
        """The product's bit depth for high-bit grey frames without sBIT (None: its references were 8-bit)."""
        return self.meta.get("bit_depth")

    def tokens_on(self, device: torch.device, cache: DeviceCache | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(stacked patch tokens (K, Nd, Dd), cls_tokens (K, Dd)) on `device` (full mode: one grid): the host tensors
        on CPU; on an accelerator a copy, kept in `cache` (an LRU bounded by bytes, shared by every product) rather
        than copied on every predict. Raises ValueError for references on several grids."""
        if device.type == "cpu":
            return self.stacked_tokens(), self.cls_tokens
        if cache is None:
            return self.stacked_tokens().to(device), self.cls_tokens.to(device)
        patch, cls = cache.get(
            ("reference-tokens", self.cache_key, device),
            lambda: (self.stacked_tokens().to(device), self.cls_tokens.to(device)),
        )
        return patch, cls

    @property
    def n_references(self) -> int:
        """K, the number of reference images."""
        return self.cls_tokens.shape[0]

    @property
    def bank_size(self) -> int:
        """Patch tokens in the memory bank (after any coreset / k-means reduction)."""
        return len(self.bank)

    def check_compatible(self, config_name: str, fingerprint: str) -> None:
        """Raises ReferenceMismatchError unless these references were built with the same features (`fingerprint`)."""
        if fingerprint != self.fingerprint:
            raise ReferenceMismatchError(
                f"these references were built with config {self.config_name!r} "
                f"(features {self.fingerprint}); this detector runs config {config_name!r} "
                f"(features {fingerprint}): fit the references again with this detector"
            )

    def save(self, folder: str | Path) -> None:
        """Write plain files into `folder` (created): tokens (safetensors), the bank, and a JSON meta file."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file(
            {"patch_tokens": self.patch_tokens.contiguous(), "cls_tokens": self.cls_tokens.contiguous()},
            folder / TENSORS_FILE,
        )
        self.bank.save(folder / BANK_FILE)
        meta = {
            **self.meta,
            "format_version": FORMAT_VERSION,
            "config_name": self.config_name,
            "fingerprint": self.fingerprint,
            "n_references": self.n_references,
            "bank_size": self.bank_size,
        }
        (folder / META_FILE).write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, folder: str | Path) -> ReferenceSet:
        """Read a set written by `save`; FileNotFoundError if a file is missing, ReferenceMismatchError on another
        format version. Use `Detector.load_references` to also check the config."""
        folder = Path(folder)
        missing = [n for n in (META_FILE, TENSORS_FILE, BANK_FILE) if not (folder / n).is_file()]
        if missing:
            raise FileNotFoundError(f"{folder} is not a saved ReferenceSet: missing {', '.join(missing)}")
        meta = json.loads((folder / META_FILE).read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ReferenceMismatchError(
                f"{folder} has reference format {meta.get('format_version')}, expected {FORMAT_VERSION}"
            )
        tensors = load_file(folder / TENSORS_FILE)
        return cls(
            config_name=meta["config_name"],
            fingerprint=meta["fingerprint"],
            patch_tokens=tensors["patch_tokens"],
            cls_tokens=tensors["cls_tokens"],
            bank=MemoryBank.load(folder / BANK_FILE),
            meta=meta,
        )
