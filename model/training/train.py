"""Train the DCP-SFR heads (backbones frozen) and write weights/heads/<config>.safetensors.

Protocol (SPEC.md): train on an annotated dataset's test split (e.g. MVTec AD) to evaluate on another (VisA),
or with --synthetic on normal images only (cut-paste and Perlin texture blends with exact masks). Every query
draws K references from its own category's normal training images; backbone features are computed once and
cached on disk.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import zlib
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from model import create_detector, resolve_device
from model.argtypes import positive_int
from model.backbones import ClipFeatures, DinoFeatures
from model.bank import max_cosine
from model.config import ConfigError
from model.network import DCPSFR, ReferenceFeatures
from model.training.cli import add_dataset_arguments, add_detector_arguments
from model.training.data.datasets import AnomalyDataset, DatasetError, load_image, load_mask, open_dataset
from model.training.data.synth import SynthesisError, cut_paste, perlin_blend
from model.training.features import FeatureCache
from model.training.losses import dice, edge_dice, focal, image_bce
from model.weights import DEFAULT_WEIGHTS_DIR, heads_path, save_heads

log = logging.getLogger(__name__)


@dataclass
class TrainOptions:
    """Everything one training run needs; the defaults are the paper's settings (SPEC.md, Training)."""

    config: str
    data: str
    categories: list[str] | None = None
    synthetic: bool = False
    synthetic_per_image: int = 4
    shots: list[int] = field(default_factory=lambda: [1, 2, 4])
    epochs: int = 25
    batch_size: int = 8
    lr_prompts: float = 0.01
    lr_heads: float = 1e-3
    focal_alpha: float = 0.9
    focal_gamma: float = 2.0
    loss_weights: dict[str, float] = field(default_factory=lambda: {"ce": 1.0, "focal": 1.0, "dice": 1.0, "edge": 1.0})
    reference_pool: int = 16
    seed: int = 0
    device: str = "auto"
    weights_dir: Path = DEFAULT_WEIGHTS_DIR
    run_dir: Path = Path("runs/train")
    out: Path | None = None
    resume: bool = False
    max_steps: int | None = None  # stop early (smoke runs and tests)


@dataclass(frozen=True)
class TrainItem:
    """One training query: image, mask (None when normal), label (1 = anomalous) and category."""

    image: Path
    mask: Path | None
    label: int
    category: str


def git_commit() -> str:
    """The repository's HEAD commit hash, or "unknown" when git is unavailable."""
    try:
        repo = Path(__file__).resolve().parents[1]
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=5)
        return done.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# --- data -----------------------------------------------------------------------------------------------------


def annotated_items(dataset: AnomalyDataset) -> list[TrainItem]:
    """Every test sample of every category as a TrainItem (the annotated split the heads train on)."""
    return [
        TrainItem(s.image_path, s.mask_path, s.label, s.category)
        for category in dataset.categories
        for s in dataset.test_samples(category)
    ]


def synthetic_items(dataset: AnomalyDataset, per_image: int, folder: Path, seed: int) -> list[TrainItem]:
    """Normal training images plus `per_image` synthetic anomalies of each, written once under `folder`."""
    items = []
    for category in dataset.categories:
        normals = dataset.train_images(category)
        for n, path in enumerate(tqdm(normals, desc=f"synthesising {category}", unit="img")):
            items.append(TrainItem(path, None, 0, category))
            for j in range(per_image):
                image_file = folder / category / f"{n:04d}_{j}.png"
                mask_file = image_file.with_name(image_file.stem + "_mask.png")
                if not (image_file.is_file() and mask_file.is_file()):
                    rng = synthetic_rng(seed, category, n, j)
                    _write_synthetic(path, normals, rng, j, image_file, mask_file)
                items.append(TrainItem(image_file, mask_file, 1, category))
    return items


def synthetic_rng(seed: int, category: str, image_index: int, anomaly_index: int) -> np.random.Generator:
    """The generator of one synthetic anomaly: distinct per category (a stable hash of its name, not its length)."""
    return np.random.default_rng([seed, zlib.crc32(category.encode()), image_index, anomaly_index])


def _write_synthetic(path: Path, normals: list[Path], rng: np.random.Generator, j: int, image: Path, mask: Path):
    base = load_image(path)
    try:
        if j % 2 == 0:
            donor = load_image(normals[int(rng.integers(len(normals)))])
            result, region = cut_paste(base, rng, source=donor)
        else:
            result, region = perlin_blend(base, rng)
    except SynthesisError:
        result, region = perlin_blend(base, rng)
    image.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(result).save(image)
    Image.fromarray(region.astype(np.uint8) * 255).save(mask)


def reference_pools(dataset: AnomalyDataset, size: int, seed: int) -> dict[str, list[Path]]:
    """Per category, up to `size` normal training images drawn
    with `seed`; each query's K references come from its pool."""
    return {c: dataset.sample_references(c, min(size, len(dataset.train_images(c))), seed) for c in dataset.categories}


# --- one step -------------------------------------------------------------------------------------------------


def batch_losses(
    network: DCPSFR,
    query: dict[str, torch.Tensor],
    refs: dict[str, torch.Tensor],
    masks: torch.Tensor,
    labels: torch.Tensor,
    opts: TrainOptions,
) -> dict[str, torch.Tensor]:
    """query features (B, ...), refs features (B*K, ...), masks (B, S, S) bool, labels (B,) -> named losses."""
    b = labels.shape[0]
    k = refs["dino_patch"].shape[0] // b
    ref_patch = refs["dino_patch"].view(b, k, *refs["dino_patch"].shape[1:])  # (B, K, Nd, Dd)
    ref_cls = refs["dino_cls"].view(b, k, -1)  # (B, K, Dd)
    own_banks = F.normalize(ref_patch.flatten(1, 2), dim=-1)  # (B, K*Nd, Dd): each query's own references
    s_cos = 1.0 - max_cosine(query["dino_patch"], own_banks)  # (B, Nd)
    out = network.run_heads(
        ClipFeatures(query["clip_layers"], query["clip_embedding"]),
        DinoFeatures(query["dino_patch"], query["dino_cls"]),
        ReferenceFeatures(ref_patch, ref_cls),
        s_cos,
        network.text_features(),
    )
    s_hat = F.interpolate(out.s_hat[:, None], size=masks.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    seg_logits = network.heads.seg_calibration(s_hat)  # (B, S, S)
    seg_probs = torch.sigmoid(seg_logits)
    w = opts.loss_weights
    losses = {
        "ce": w["ce"] * image_bce(out.y_hat, labels),
        "focal": w["focal"] * focal(seg_logits, masks, opts.focal_alpha, opts.focal_gamma),
        "dice": w["dice"] * dice(seg_probs, masks),
        "edge": w["edge"] * edge_dice(seg_probs, masks),
    }
    losses["total"] = sum(losses.values())
    return losses


# --- the loop -------------------------------------------------------------------------------------------------


def train(opts: TrainOptions) -> Path:
    """Train and write the heads file; returns its path. Resumable from the run folder's checkpoint."""
    torch.manual_seed(opts.seed)
    rng = np.random.default_rng(opts.seed)
    device = resolve_device(opts.device)
    detector = create_detector(opts.config, weights_dir=opts.weights_dir, device=device, heads_file="random")
    network = detector.network
    dataset = open_dataset(opts.data, opts.categories)
    run_dir = Path(opts.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    items = (
        synthetic_items(dataset, opts.synthetic_per_image, run_dir / "synthetic", opts.seed)
        if opts.synthetic
        else annotated_items(dataset)
    )
    if not any(i.label for i in items) or all(i.label for i in items):
        raise DatasetError(f"training needs both normal and anomalous samples; {opts.data} gave {len(items)} of one")
    pools = reference_pools(dataset, opts.reference_pool, opts.seed)
    cache = FeatureCache(run_dir / "features", detector)
    cache.ensure([i.image for i in items] + [p for pool in pools.values() for p in pool])
    mask_size = min(detector.config.inference.map_size, 256)
    masks = {i.image: _mask_tensor(i, mask_size) for i in items}

    heads = network.heads
    heads.train()
    prompt_params = list(heads.prompts.parameters())
    other_params = [p for n, p in heads.named_parameters() if not n.startswith("prompts.")]
    optimizer = torch.optim.Adam(
        [{"params": prompt_params, "lr": opts.lr_prompts}, {"params": other_params, "lr": opts.lr_heads}]
    )
    checkpoint = run_dir / "checkpoint.pt"
    start_epoch, step = 0, 0
    if opts.resume and checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        heads.load_state_dict(state["heads"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, step = state["epoch"], state["step"]
        rng.bit_generator.state = state["rng"]
        log.info("resumed from %s at epoch %d, step %d", checkpoint, start_epoch, step)

    log_file = (run_dir / "log.jsonl").open("a")
    steps_per_epoch = max(1, len(items) // opts.batch_size)
    for epoch in range(start_epoch, opts.epochs):
        order = rng.permutation(len(items))
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{opts.epochs}", unit="step")
        for b in bar:
            batch = [items[i] for i in order[b * opts.batch_size : (b + 1) * opts.batch_size]]
            k = int(rng.choice(opts.shots))
            ref_paths = [p for item in batch for p in _draw(pools[item.category], k, rng)]
            losses = batch_losses(
                network,
                cache.load([i.image for i in batch], device),
                cache.load(ref_paths, device),
                torch.stack([masks[i.image] for i in batch]).to(device),
                torch.tensor([float(i.label) for i in batch], device=device),
                opts,
            )
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            optimizer.step()
            step += 1
            record = {"epoch": epoch, "step": step, "k": k, **{n: round(v.item(), 5) for n, v in losses.items()}}
            log_file.write(json.dumps(record) + "\n")
            bar.set_postfix(loss=f"{record['total']:.4f}")
            if opts.max_steps is not None and step >= opts.max_steps:
                break
        torch.save(
            {
                "heads": heads.state_dict(),
                "optimizer": optimizer.state_dict(),
                "epoch": epoch + 1,
                "step": step,
                "rng": rng.bit_generator.state,
            },
            checkpoint,
        )
        if opts.max_steps is not None and step >= opts.max_steps:
            break
    log_file.close()

    out = opts.out or heads_path(Path(opts.weights_dir), detector.config.name)
    info = {
        "config": detector.config.name,
        "data": opts.data,
        "categories": list(dataset.categories),
        "synthetic": opts.synthetic,
        "epochs": opts.epochs,
        "steps": step,
        "git_commit": git_commit(),
        "date": datetime.now(UTC).isoformat(),
        "options": {k: str(v) for k, v in asdict(opts).items()},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    save_heads(heads, out, info)
    log.info("heads written to %s", out)
    return out


def _draw(pool: list[Path], k: int, rng: np.random.Generator) -> list[Path]:
    return [pool[i] for i in rng.choice(len(pool), size=k, replace=len(pool) < k)]


def _mask_tensor(item: TrainItem, size: int) -> torch.Tensor:
    if item.mask is None:
        return torch.zeros(size, size, dtype=torch.bool)
    return torch.from_numpy(load_mask(item.mask, size))


# --- command line ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> TrainOptions:
    """Parse the command line of `python -m model.training.train` into TrainOptions."""
    parser = argparse.ArgumentParser(
        prog="python -m model.training.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: python -m model.training.train --config edge --data mvtec:/data/mvtec_ad   "
        "(then evaluate on VisA)",
    )
    add_detector_arguments(parser)
    add_dataset_arguments(parser)
    parser.add_argument(
        "--synthetic", action="store_true", help="train on synthetic anomalies of the normal train images only"
    )
    parser.add_argument("--synthetic-per-image", type=positive_int, default=4, help="anomalies per normal image")
    parser.add_argument("--shots", type=positive_int, nargs="+", default=[1, 2, 4], help="K drawn per batch from these")
    parser.add_argument("--epochs", type=positive_int, default=25)
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--lr-prompts", type=float, default=0.01, help="Adam lr of the prompt context")
    parser.add_argument("--lr-heads", type=float, default=1e-3, help="Adam lr of all other head parameters")
    parser.add_argument(
        "--reference-pool", type=positive_int, default=16, help="normal images per category to draw K from"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", type=Path, default=Path("runs/train"), help="cache, checkpoint and loss log")
    parser.add_argument("--out", type=Path, help="heads file (default: <weights-dir>/heads/<config>.safetensors)")
    parser.add_argument("--resume", action="store_true", help="continue from <run-dir>/checkpoint.pt")
    parser.add_argument("--max-steps", type=positive_int, help="stop after this many steps (smoke runs)")
    args = parser.parse_args(argv)
    return TrainOptions(**vars(args))


def main(argv: list[str] | None = None) -> int:
    """Run `python -m model.training.train`; returns 0, or 2 when the dataset, config or weights cannot be used."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    opts = parse_args(argv)
    try:
        path = train(opts)
    except (DatasetError, ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"heads written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
