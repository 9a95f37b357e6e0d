"""Evaluate a detector on MVTec AD / VisA: k-shot, several seeds, the seven metrics, per category and mean.

References: K images drawn from each category's train/good with each seed; every test image is scored;
metrics at the evaluation size (256x256 by default); the table reports the mean over seeds, in %.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from model import Detector, create_detector
from model.argtypes import positive_int
from model.config import ConfigError
from model.metrics import IMAGE_METRICS, PIXEL_METRICS, image_metrics, pixel_metrics
from model.training.cli import add_dataset_arguments, add_detector_arguments
from model.training.data.datasets import AnomalyDataset, DatasetError, TestSample, load_image, open_dataset
from model.training.visualize import side_by_side

log = logging.getLogger(__name__)
METRICS = IMAGE_METRICS + PIXEL_METRICS


@dataclass
class CategoryRun:
    """The metrics (fractions) of one category at one K and seed, with the image count and prediction seconds."""

    category: str
    shots: int
    seed: int
    metrics: dict[str, float]
    n_images: int
    seconds: float  # prediction time only (references excluded)


@dataclass
class EvalResult:
    """Every CategoryRun of one evaluation, with the config, data spec and mode it ran with."""

    config: str
    data: str
    mode: str
    random_weights: bool
    eval_size: int
    runs: list[CategoryRun] = field(default_factory=list)

    def table(self, shots: int) -> dict[str, dict[str, float]]:
        """category -> metric -> mean over seeds (fractions), plus a 'mean' row over categories."""
        rows: dict[str, dict[str, float]] = {}
        for category in dict.fromkeys(r.category for r in self.runs if r.shots == shots):
            runs = [r for r in self.runs if r.shots == shots and r.category == category]
            rows[category] = {m: float(np.nanmean([r.metrics[m] for r in runs])) for m in METRICS}
        if rows:
            rows["mean"] = {m: float(np.nanmean([row[m] for row in rows.values()])) for m in METRICS}
        return rows

    def images_per_second(self, shots: int) -> float:
        """Prediction throughput at K = `shots` over every run: images / seconds (reference fitting excluded)."""
        runs = [r for r in self.runs if r.shots == shots]
        return sum(r.n_images for r in runs) / max(sum(r.seconds for r in runs), 1e-9)


def evaluate(
    detector: Detector,
    dataset: AnomalyDataset,
    shots: list[int],
    seeds: list[int],
    eval_size: int = 256,
    batch_size: int = 8,
    save_maps: Path | None = None,
    data_spec: str = "",
) -> EvalResult:
    """Fit K references per (K, seed, category), score every test image and compute the seven metrics at `eval_size` px;
    panels for the first seed go to `save_maps` when given."""
    result = EvalResult(detector.config.name, data_spec, detector.mode, detector.random_weights, eval_size)
    jobs = [(k, s, c) for k in shots for s in seeds for c in dataset.categories]
    for k, seed, category in tqdm(jobs, desc="evaluating", unit="run"):
        samples = dataset.test_samples(category)
        refs = detector.fit_references([load_image(p) for p in dataset.sample_references(category, k, seed)])
        start = time.perf_counter()
        scores, maps = predict_all(detector, refs, samples, eval_size, batch_size)
        seconds = time.perf_counter() - start
        masks = np.stack([s.load_mask(eval_size) for s in samples])  # (N, S, S)
        labels = np.array([s.label for s in samples])
        metrics = safe_metrics(scores, labels, maps, masks, category)
        result.runs.append(CategoryRun(category, k, seed, metrics, len(samples), seconds))
        if save_maps is not None and seed == seeds[0]:
            write_panels(save_maps / f"{k}shot" / category, samples, maps, masks)
    return result


def predict_all(detector: Detector, refs, samples: list[TestSample], size: int, batch_size: int):
    """Scores (N,) and maps (N, size, size) of all samples, predicted in batches."""
    scores, maps = [], []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        for pred in detector.predict([s.load_image() for s in chunk], refs):
            scores.append(pred.score)
            full = torch.from_numpy(pred.anomaly_map)[None, None]  # (1, 1, H, W)
            maps.append(F.interpolate(full, size=(size, size), mode="bilinear", align_corners=False)[0, 0].numpy())
    return np.array(scores), np.stack(maps)


def safe_metrics(scores, labels, maps, masks, category: str) -> dict[str, float]:
    """All seven metrics; NaN (with a warning) where a category lacks normal or anomalous examples."""
    out = dict.fromkeys(METRICS, float("nan"))
    for compute, args in ((image_metrics, (scores, labels)), (pixel_metrics, (maps, masks))):
        try:
            out |= compute(*args)
        except ValueError as err:
            log.warning("%s: %s", category, err)
    return out


def write_panels(folder: Path, samples: list[TestSample], maps: np.ndarray, masks: np.ndarray) -> None:
    """Save one image | ground truth | map panel per sample under `folder`, all maps on the category's 1st..99.9th
    percentile scale."""
    folder.mkdir(parents=True, exist_ok=True)
    vmin, vmax = float(np.percentile(maps, 1)), float(np.percentile(maps, 99.9))  # one scale per category
    for sample, amap, mask in zip(samples, maps, masks, strict=True):
        panel = side_by_side(sample.load_image(), mask, amap, vmin, vmax)
        panel.save(folder / f"{sample.defect_type}_{sample.image_path.stem}.png")


def format_markdown(result: EvalResult, shots: list[int]) -> str:
    """The results as markdown: one table per K (mean over seeds, %), per category plus the mean, and the throughput."""
    lines = [f"# Evaluation: config `{result.config}` on `{result.data}` ({result.mode} mode)", ""]
    if result.random_weights:
        lines += ["**RANDOM WEIGHTS: these numbers mean nothing about accuracy (pipeline check only).**", ""]
    header = "| category | " + " | ".join(m.replace("_", "-") for m in METRICS) + " |"
    for k in shots:
        table = result.table(k)
        seeds = sorted({r.seed for r in result.runs if r.shots == k})
        lines += [f"## {k}-shot (mean over seeds {seeds}, %)", "", header, "|" + "---|" * (len(METRICS) + 1)]
        for category, row in table.items():
            name = f"**{category}**" if category == "mean" else category
            lines.append(f"| {name} | " + " | ".join(f"{100 * row[m]:.1f}" for m in METRICS) + " |")
        lines += ["", f"Throughput: {result.images_per_second(k):.1f} images/s (prediction only).", ""]
    return "\n".join(lines)


def write_results(result: EvalResult, shots: list[int], out: Path) -> str:
    """`out/results.md` (the tables) and `out/results.json` (every run, the tables, images/s); returns the markdown."""
    markdown = format_markdown(result, shots)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(markdown)
    payload = {
        **asdict(result),
        "tables": {str(k): result.table(k) for k in shots},
        "images_per_second": {str(k): result.images_per_second(k) for k in shots},
    }
    (out / "results.json").write_text(json.dumps(payload, indent=2))
    return markdown


def main(argv: list[str] | None = None) -> int:
    """Run `python -m model.training.evaluate`; returns 0, or 2 when the config, weights or dataset cannot be opened."""
    parser = argparse.ArgumentParser(
        prog="python -m model.training.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: python -m model.training.evaluate --config edge --data visa:/data/visa --shots 1 2 4 "
        "--seeds 0 1 2",
    )
    add_detector_arguments(parser)
    add_dataset_arguments(parser)
    parser.add_argument("--shots", type=positive_int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--heads", type=Path, help="heads file (default: <weights-dir>/heads/<config>.safetensors)")
    parser.add_argument("--eval-size", type=positive_int, default=256, help="pixel metrics at this square size")
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--out", type=Path, default=Path("runs/eval"), help="results.md and results.json here")
    parser.add_argument("--save-maps", type=Path, help="write image | ground truth | map panels here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        detector = create_detector(args.config, weights_dir=args.weights_dir, device=args.device, heads_file=args.heads)
        dataset = open_dataset(args.data, args.categories)
    except (DatasetError, ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result = evaluate(
        detector, dataset, args.shots, args.seeds, args.eval_size, args.batch_size, args.save_maps, args.data
    )
    markdown = write_results(result, args.shots, args.out)
    print(markdown)
    print(f"written: {args.out / 'results.md'}, {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
