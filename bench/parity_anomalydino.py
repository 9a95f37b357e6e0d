"""Training-free mode vs the authors' AnomalyDINO code, on identical random DINOv2-S weights.

Usage: python -m bench.parity_anomalydino /path/to/AnomalyDINO [--bottle DIR] [--hard-cases DIR]

The authors' code (github.com/dammsi/AnomalyDINO, fetched by you, never committed here) runs unchanged except
that its `torch.hub.load('facebookresearch/dinov2', ...)` returns our timm DINOv2-S (the `edge` config with
random_init=True), wrapped to offer `patch_size` and `get_intermediate_layers`. Its plotting/TIFF modules are
stubbed (only used for figures). For each (reference, test) pair it prints the relative score difference and
the correlation of the two anomaly maps at 256 x 256. Targets: score within 1e-3 relative, map corr >= 0.999.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import cv2
import faiss
import numpy as np
import torch
from PIL import Image

from model import create_detector

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
TESTS = ("broken_large/000.png", "broken_large/003.png", "good/001.png")


class HubDino(torch.nn.Module):
    """Our timm DINOv2 behind the two members AnomalyDINO's DINOv2Wrapper uses."""

    def __init__(self, timm_model: torch.nn.Module) -> None:
        super().__init__()
        self.model = timm_model
        self.patch_size = int(timm_model.patch_embed.patch_size[0])

    def get_intermediate_layers(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        """The patch tokens of the last block after the final norm,
        class/register tokens dropped, as a 1-tuple of (B, N, D)."""
        tokens = self.model.forward_features(x)  # last block, final norm applied
        return (tokens[:, self.model.num_prefix_tokens :],)


def load_authors_code(folder: Path, dino: torch.nn.Module):
    """Import the authors' code from `folder` with plotting stubbed and torch.hub.load patched to return `dino`; returns
    (model, mean_top1p, dists2map)."""
    for stub in ("matplotlib", "matplotlib.pyplot", "tifffile"):
        sys.modules.setdefault(stub, types.ModuleType(stub))
    sys.path.insert(0, str(folder))
    torch.hub.load = lambda *args, **kwargs: HubDino(dino)  # the only change to the authors' code path
    from src.backbones import get_model  # from the fetched folder
    from src.post_eval import mean_top1p
    from src.utils import dists2map

    return get_model("dinov2_vits14", "cpu", smaller_edge_size=448), mean_top1p, dists2map


def authors_result(model, mean_top1p, dists2map, reference: np.ndarray, test: np.ndarray):
    """AnomalyDINO's run_anomaly_detection for one reference and one test image (no masking, no rotation)."""
    with torch.inference_mode():
        ref_tensor, _ = model.prepare_image(reference)
        features_ref = model.extract_features(ref_tensor).astype("float32")
        index = faiss.IndexFlatL2(features_ref.shape[1])
        faiss.normalize_L2(features_ref)
        index.add(features_ref)
        test_tensor, grid = model.prepare_image(test)
        features = model.extract_features(test_tensor).astype("float32")
    faiss.normalize_L2(features)
    distances, _ = index.search(features, k=1)
    distances = distances / 2  # 1 - cosine
    d_map = distances.squeeze().reshape(grid)
    return float(mean_top1p(distances.flatten())), dists2map(d_map, test.shape), grid


def read_rgb(path: Path) -> np.ndarray:
    """Read an image file as an (H, W, 3) uint8 RGB array with OpenCV, as AnomalyDINO does."""
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)  # as AnomalyDINO reads


def pairs(bottle: Path, hard: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The (label, reference, test) RGB pairs compared: bottle_xs
    test frames, their 900x600 crops, and the 1920x1080 hard case."""
    good = sorted((bottle / "train" / "good").glob("*.png"))
    tests = [bottle / "test" / name for name in TESTS]
    ref = read_rgb(good[0])
    out = [(f"bottle 900x900 {t.parent.name}/{t.name}", ref, read_rgb(t)) for t in tests]
    crop = (slice(150, 750), slice(0, 900))  # 900 x 600 crops: non-square real images
    out += [(f"bottle crop 900x600 {t.parent.name}/{t.name}", ref[crop], read_rgb(t)[crop]) for t in tests]
    wide_ref = read_rgb(hard / "wide_1920x1080_good.jpg")
    out.append(("wide 1920x1080 defect", wide_ref, read_rgb(hard / "wide_1920x1080_defect.jpg")))
    return out


def main() -> None:
    """Compare our training-free scores and maps with the authors'
    on every pair, print the differences and PASS/FAIL."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("anomalydino", type=Path, help="folder holding the authors' code (with src/)")
    parser.add_argument("--bottle", type=Path, default=SHARED / "mvtec_ad" / "bottle_xs")
    parser.add_argument("--hard-cases", type=Path, default=SHARED / "hard-cases")
    args = parser.parse_args()
    detector = create_detector("edge", random_init=True, device="cpu")  # DINOv2-S, seeded random weights
    model, mean_top1p, dists2map = load_authors_code(args.anomalydino, detector.network.dino.model)
    print(f"{'pair':48s} {'grid':>7s} {'score ours':>11s} {'authors':>11s} {'rel diff':>9s} {'map corr':>9s}")
    worst_rel, worst_corr = 0.0, 1.0
    for name, reference, test in pairs(args.bottle, args.hard_cases):
        score, anomaly_map, grid = authors_result(model, mean_top1p, dists2map, reference, test)
        refs = detector.fit_references([Image.fromarray(reference)])
        ours = detector.predict([Image.fromarray(test)], refs)[0]
        assert ours.anomaly_map.shape == anomaly_map.shape == test.shape[:2]
        rel = abs(ours.score - score) / abs(score)
        a, b = (
            cv2.resize(m.astype(np.float32), (256, 256), interpolation=cv2.INTER_LINEAR)
            for m in (ours.anomaly_map, anomaly_map)
        )
        corr = float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
        worst_rel, worst_corr = max(worst_rel, rel), min(worst_corr, corr)
        print(f"{name:48s} {grid[0]:>3d}x{grid[1]:<3d} {ours.score:11.6f} {score:11.6f} {rel:9.2e} {corr:9.6f}")
    verdict = "PASS" if worst_rel <= 1e-3 and worst_corr >= 0.999 else "FAIL"
    print(
        f"worst relative score difference {worst_rel:.2e} (target <= 1e-3), worst map correlation "
        f"{worst_corr:.6f} (target >= 0.999): {verdict}"
    )


if __name__ == "__main__":
    main()
