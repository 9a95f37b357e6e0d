"""FakeDetector: the real Detector's stages with the backbone swapped for a fixed random projection of each patch's
pixels, for tests of the HTTP edge, the engine and the workflows. No network to build, no ViT to run: an app
with it starts in milliseconds; preprocessing, the memory bank, maps, tiling and calibration are the real code.

Its features are the `tiny` config's shape (48-d tokens on a 14-px patch grid) and fingerprint, so the
service's reference loader takes the references it fits; they mean nothing as features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from model import Detector, load_config
from model.backbones import DinoFeatures
from model.device_cache import DeviceCache
from model.notices import OnceLog
from model.references import feature_fingerprint

PATCH = 14
WIDTH = 48  # the tiny config's DINOv2 width


class FakeRuntime:
    """Names the runtime in `repr(detector)`."""

    name = "fake"


class FakeDetector(Detector):
    """Training-free detection on the tiny config whose "backbone" is a seeded projection of raw patch pixels."""

    def __init__(self, device_cache_bytes: int = 2**30) -> None:
        self.network = None
        self.runtime = FakeRuntime()
        self.config = load_config("tiny")
        self.device = torch.device("cpu")
        self.random_weights = True
        self.heads_info = {}
        self.mode = "training-free"
        self.fingerprint = feature_fingerprint(self.config, True, self.device)
        self.device_cache = DeviceCache(device_cache_bytes)
        self._text_features = None
        self._notices = OnceLog()
        generator = torch.Generator().manual_seed(0)
        self._projection = torch.randn(3 * PATCH * PATCH, WIDTH, generator=generator) / (3 * PATCH * PATCH) ** 0.5

    @property
    def patch_size(self) -> int:
        """The tiny config's DINOv2 patch (14 px)."""
        return PATCH

    def encode_dino(self, images: torch.Tensor) -> DinoFeatures:
        """(B, 3, H, W) -> each 14 x 14 patch's pixels projected to 48-d (B, Nd, 48), their mean as the class token."""
        patches = F.unfold(images.float(), kernel_size=PATCH, stride=PATCH).transpose(1, 2)  # (B, Nd, 3 * 14 * 14)
        tokens = patches @ self._projection  # (B, Nd, 48)
        return DinoFeatures(patch_tokens=tokens, cls_token=tokens.mean(dim=1))  # (B, Nd, 48), (B, 48)
