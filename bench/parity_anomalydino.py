"""Training-free mode vs the authors' AnomalyDINO code on the torch-hub DINOv2, identical random DINOv2-S weights.

Usage: python -m bench.parity_anomalydino /path/to/AnomalyDINO /path/to/dinov2 [--bottle DIR] [--hard-cases DIR]

Both folders are fetched by you and never committed here: the authors' code (github.com/dammsi/AnomalyDINO) and
the torch-hub DINOv2 code (github.com/facebookresearch/dinov2). The authors' code runs unchanged except that its
`torch.hub.load('facebookresearch/dinov2', 'dinov2_vits14')` builds the hub's own ViT-S/14 from the local dinov2
folder, without downloading weights; plotting/TIFF modules are stubbed (only used for figures). One random
checkpoint (the hub's ViT-S/14 at its native 518 px, seeded, layer scales at the hub's 1.0) is loaded into the hub
model and into our detector (`edge` config, the factory's loading path), so everything differs only by code: our
timm backbone and its position-embedding resampling, resize, crop, tokens, distances, top-k, upsampling, smoothing.

Cases: 1-shot pairs (square, 3:2 crops, 16:9), and a product whose references and test frames come in several
aspects (1:1, 4:3, 3:4, 2:1 crops of the same bottle images) in one memory bank. For each test frame it prints the
relative score difference and the correlation of the two anomaly maps at 256 x 256. Targets: score within 1e-3
relative, map correlation >= 0.999 on every frame.
"""

from __future__ import annotations

import argparse
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import cv2
import faiss
import numpy as np
import torch
from PIL import Image

from model import create_detector
from model.factory import load_dino_state

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
TESTS = ("broken_large/000.png", "broken_large/003.png", "good/001.png")
ASPECTS = {"1:1": (1, 1), "4:3": (4, 3), "3:4": (3, 4), "2:1": (2, 1)}  # width : height


@dataclass(frozen=True)
class Case:
    """One product: its references and test frames (RGB arrays), compared frame by frame."""

    name: str
    references: list[np.ndarray]
    tests: list[tuple[str, np.ndarray]]


def hub_model(dinov2: Path, seed: int = 0) -> torch.nn.Module:
    """The torch-hub DINOv2 ViT-S/14 (from the local dinov2 folder) with seeded random weights: the checkpoint."""
    sys.path.insert(0, str(dinov2))
    from dinov2.hub.backbones import dinov2_vits14  # from the fetched folder

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = dinov2_vits14(pretrained=False)  # layer scales at init_values=1.0, pos_embed 37 x 37
    return model.eval()


def checkpoint_of(hub: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The hub model's weights as a timm DINOv2 checkpoint (same names; timm has no mask token)."""
    return {k: v.clone() for k, v in hub.state_dict().items() if k != "mask_token"}


def load_authors_code(folder: Path, hub: torch.nn.Module):
    """Import the authors' code from `folder` with plotting stubbed and torch.hub.load returning `hub`; returns
    (model, mean_top1p, dists2map)."""
    for stub in ("matplotlib", "matplotlib.pyplot", "tifffile"):
        sys.modules.setdefault(stub, types.ModuleType(stub))
    sys.path.insert(0, str(folder))
    torch.hub.load = lambda *args, **kwargs: hub  # the only change to the authors' code path
    from src.backbones import get_model  # from the fetched folder
    from src.post_eval import mean_top1p
    from src.utils import dists2map

    return get_model("dinov2_vits14", "cpu", smaller_edge_size=448), mean_top1p, dists2map


def authors_results(model, mean_top1p, dists2map, references: list[np.ndarray], tests: list[np.ndarray]):
    """AnomalyDINO's run_anomaly_detection for K references and some test frames (no masking, no rotation):
    [(score, map, grid)] per test frame."""
    with torch.inference_mode():
        features_ref = np.concatenate([model.extract_features(model.prepare_image(r)[0]) for r in references])
    features_ref = features_ref.astype("float32")
    index = faiss.IndexFlatL2(features_ref.shape[1])
    faiss.normalize_L2(features_ref)
    index.add(features_ref)
    out = []
    for test in tests:
        with torch.inference_mode():
            test_tensor, grid = model.prepare_image(test)
            features = model.extract_features(test_tensor).astype("float32")
        faiss.normalize_L2(features)
        distances, _ = index.search(features, k=1)
        distances = distances / 2  # 1 - cosine
        out.append(
            (float(mean_top1p(distances.flatten())), dists2map(distances.squeeze().reshape(grid), test.shape), grid)
        )
    return out


def read_rgb(path: Path) -> np.ndarray:
    """Read an image file as an (H, W, 3) uint8 RGB array with OpenCV, as AnomalyDINO does."""
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def aspect_crop(image: np.ndarray, aspect: tuple[int, int]) -> np.ndarray:
    """The largest centred crop of `image` with width : height = aspect."""
    h, w = image.shape[:2]
    cw, ch = min(w, h * aspect[0] // aspect[1]), min(h, w * aspect[1] // aspect[0])
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return np.ascontiguousarray(image[y0 : y0 + ch, x0 : x0 + cw])


def cases(bottle: Path, hard: Path) -> list[Case]:
    """1-shot pairs (bottle 900x900, its 900x600 crops, the 1920x1080 hard case) and one mixed-aspect product."""
    good = sorted((bottle / "train" / "good").glob("*.png"))
    tests = [(f"{t.parent.name}/{t.name}", read_rgb(t)) for t in (bottle / "test" / n for n in TESTS)]
    ref = read_rgb(good[0])
    crop = (slice(150, 750), slice(0, 900))  # 900 x 600 crops: non-square real images
    out = [
        Case("bottle 900x900", [ref], tests),
        Case("bottle crop 900x600", [ref[crop]], [(name, image[crop]) for name, image in tests]),
        Case(
            "wide 1920x1080",
            [read_rgb(hard / "wide_1920x1080_good.jpg")],
            [("defect", read_rgb(hard / "wide_1920x1080_defect.jpg"))],
        ),
    ]
    mixed_refs = [aspect_crop(read_rgb(path), a) for path, a in zip(good[:4], ASPECTS.values(), strict=True)]
    mixed_tests = [(f"{name} {a}", aspect_crop(image, ASPECTS[a])) for name, image in tests for a in ASPECTS]
    out.append(Case("mixed refs 1:1,4:3,3:4,2:1", mixed_refs, mixed_tests))
    return out


def map_correlation(ours: np.ndarray, theirs: np.ndarray) -> float:
    """Pearson correlation of two anomaly maps, both resized to 256 x 256 (bilinear)."""
    a, b = (cv2.resize(m.astype(np.float32), (256, 256), interpolation=cv2.INTER_LINEAR) for m in (ours, theirs))
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def main() -> None:
    """Compare our training-free scores and maps with the authors' on every test frame, print the differences and
    PASS/FAIL."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("anomalydino", type=Path, help="folder holding the authors' code (with src/)")
    parser.add_argument("dinov2", type=Path, help="folder holding the torch-hub DINOv2 code (with dinov2/)")
    parser.add_argument("--bottle", type=Path, default=SHARED / "mvtec_ad" / "bottle_xs")
    parser.add_argument("--hard-cases", type=Path, default=SHARED / "hard-cases")
    args = parser.parse_args()
    hub = hub_model(args.dinov2)
    detector = create_detector("edge", random_init=True, device="cpu")  # DINOv2-S architecture ...
    load_dino_state(detector.network.dino.model, checkpoint_of(hub))  # ... with the hub model's weights
    model, mean_top1p, dists2map = load_authors_code(args.anomalydino, hub)
    header = ("size", "grid", "ours", "authors", "rel diff", "corr")
    print(
        f"{'case / test frame':52s} " + " ".join(f"{h:>{w}s}" for h, w in zip(header, (9, 7, 9, 9, 9, 9), strict=True))
    )
    worst_rel, worst_corr = 0.0, 1.0
    for case in cases(args.bottle, args.hard_cases):
        theirs = authors_results(model, mean_top1p, dists2map, case.references, [t for _, t in case.tests])
        refs = detector.fit_references([Image.fromarray(r) for r in case.references])
        ours = detector.predict([Image.fromarray(t) for _, t in case.tests], refs)
        for (name, test), prediction, (score, anomaly_map, grid) in zip(case.tests, ours, theirs, strict=True):
            assert prediction.anomaly_map.shape == anomaly_map.shape == test.shape[:2]
            rel = abs(prediction.score - score) / abs(score)
            corr = map_correlation(prediction.anomaly_map, anomaly_map)
            worst_rel, worst_corr = max(worst_rel, rel), min(worst_corr, corr)
            size = f"{test.shape[1]}x{test.shape[0]}"
            print(
                f"{case.name + ' ' + name:52s} {size:>9s} {grid[0]:>3d}x{grid[1]:<3d} {prediction.score:9.6f} "
                f"{score:9.6f} {rel:9.2e} {corr:9.6f}"
            )
    verdict = "PASS" if worst_rel <= 1e-3 and worst_corr >= 0.999 else "FAIL"
    print(
        f"worst relative score difference {worst_rel:.2e} (target <= 1e-3), worst map correlation "
        f"{worst_corr:.6f} (target >= 0.999): {verdict}"
    )


if __name__ == "__main__":
    main()
