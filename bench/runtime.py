"""Backbone runtimes side by side against torch fp32 on the same frames: per-frame time ratio (interleaved), and
decision parity: verdicts at a threshold set on the fp32 scores, anomaly map correlation, score differences.

The test set is a folder of the MVTec layout (`--parity-data`, default the bottle images under ../shared/data):
references from train/good, frames from test/good (label 0) and every other test/ folder (label 1). The threshold
is the one that best separates the torch fp32 decision scores of those frames (midpoint of the widest gap at the
best accuracy): it lies between the closest good and defective scores, where a low-precision runtime would flip
a verdict first. Without the folder, synthetic photo-like frames are timed and no verdicts are compared.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.common import Section, Target, p50, photo_like
from model import ConfigError, Detector, Prediction, ReferenceSet, create_detector
from model.runtime import RUNTIMES

PARITY = 1e-3  # fp32 runtimes: max |map diff| + |score diff| vs torch
CORRELATION_GOAL = 0.99  # low-precision runtimes: Pearson correlation of each frame's map with torch's
SPEED_GOALS = {"openvino-int8": 3.0, "openvino-bf16": 3.0}  # per-frame speed-up over torch fp32; others 1.5
MODES = {"training-free": None, "full": "random"}  # heads_file per mode (None: training-free without heads)
DEFAULT_PARITY_DATA = Path("../shared/data/mvtec_ad/bottle_xs")


def test_set(root: Path, size: tuple[int, int]) -> tuple[list[Image.Image], list[Image.Image], list[int] | None]:
    """(references, frames, labels 0 good / 1 defective) from an MVTec-layout folder; synthetic frames and no
    labels when the folder is missing."""
    if not (root / "train" / "good").is_dir():
        return [photo_like(size, seed) for seed in range(4)], [photo_like(size, 100 + s) for s in range(2)], None
    references = [Image.open(p).convert("RGB") for p in sorted((root / "train" / "good").glob("*.png"))]
    frames, labels = [], []
    for folder in sorted((root / "test").iterdir(), key=lambda p: (p.name != "good", p.name)):
        for path in sorted(folder.glob("*.png")):
            frames.append(Image.open(path).convert("RGB"))
            labels.append(0 if folder.name == "good" else 1)
    return references, frames, labels


def separating_threshold(scores: list[float], labels: list[int]) -> float:
    """The threshold t (verdict: defective when score > t) with the best accuracy on (scores, labels), the midpoint
    of the widest gap among the best; with separable scores it lies between the highest good and lowest defective."""
    ordered = sorted(scores)
    candidates = [ordered[0] - 1.0, ordered[-1] + 1.0] + [(a + b) / 2 for a, b in itertools.pairwise(ordered)]
    gaps = [float("inf"), float("inf")] + [b - a for a, b in itertools.pairwise(ordered)]

    def accuracy(t: float) -> float:
        return float(np.mean([(s > t) == bool(y) for s, y in zip(scores, labels, strict=True)]))

    return max(zip(candidates, gaps, strict=True), key=lambda c: (accuracy(c[0]), c[1]))[0]


def map_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two anomaly maps' pixels (1.0 when both are constant and equal)."""
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return 1.0 if np.allclose(a, b) else 0.0
    return float(np.corrcoef(a, b)[0, 1])


def detectors_of(args: argparse.Namespace, heads: str | None) -> tuple[dict[str, Detector], list[str]]:
    """One detector per runtime asked for, and a line for each runtime refused here (bf16 without native bf16)."""
    detectors, refused = {}, []
    for name in [r for r in args.runtimes if r in RUNTIMES]:
        try:
            detectors[name] = create_detector(
                args.config,
                device="cpu",
                random_init=args.random_init,
                heads_file=heads,
                runtime=name,
                runtime_cache_dir=args.runtime_cache_dir,
            )
        except ConfigError as err:
            refused.append(f"{name}: not run: {err}")
    return detectors, refused


def timed_frames(
    detectors: dict[str, Detector], refs: dict[str, ReferenceSet], frames: list[Image.Image], repeats: int
) -> tuple[dict[str, list[list[float]]], dict[str, list[Prediction]]]:
    """Per runtime: ms of each frame's predict per repeat ([frame][repeat]) and each frame's prediction. Runtimes
    take turns on every frame (one warm-up round first), so load drifts hit them alike."""
    times = {name: [[] for _ in frames] for name in detectors}
    predictions = {name: [] for name in detectors}
    for name, det in detectors.items():
        det.predict(frames[:1], refs[name])  # warm-up: sessions opened, caches filled
    for index, frame in enumerate(frames):
        last = {}
        for _ in range(repeats):
            for name, det in detectors.items():
                start = time.perf_counter()
                (last[name],) = det.predict([frame], refs[name])
                times[name][index].append((time.perf_counter() - start) * 1000.0)
        for name in detectors:
            predictions[name].append(last[name])
    return times, predictions


def run_mode(args: argparse.Namespace, mode: str, heads: str | None, section: Section) -> dict:
    """One mode's rows and targets; returns its figures for the JSON."""
    references, frames, labels = test_set(args.parity_data, tuple(args.image_size))
    detectors, refused = detectors_of(args, heads)
    refs = {name: det.fit_references(references) for name, det in detectors.items()}
    times, predictions = timed_frames(detectors, refs, frames, args.repeats)
    base = predictions["torch"]
    decision = {name: [p.decision_score for p in preds] for name, preds in predictions.items()}
    threshold = separating_threshold(decision["torch"], labels) if labels else None
    section.rows.append(f"-- {mode} (detector mode {detectors['torch'].mode}), {len(frames)} frames")
    section.rows.extend(refused)
    if threshold is not None:
        verdicts = [s > threshold for s in decision["torch"]]
        accuracy = np.mean([v == bool(y) for v, y in zip(verdicts, labels, strict=True)])
        margin = min(abs(s - threshold) for s in decision["torch"])
        section.rows.append(
            f"threshold {threshold:.4f} on torch fp32 decision scores: accuracy {accuracy:.2f}, closest score "
            f"{margin:.2e} from it"
        )
    section.rows.append(
        f"{'runtime':14} {'p50 ms':>9} {'speed-up':>9} {'min':>6} {'verdicts':>9} {'min corr':>9} "
        f"{'max|map d|':>11} {'max|score d|':>12} {'max|logit d|':>12}"
    )
    torch_ms = [statistics.median(t) for t in times["torch"]]
    rows = {}
    for name, preds in predictions.items():
        frame_ms = [statistics.median(t) for t in times[name]]
        ratios = [a / b for a, b in zip(torch_ms, frame_ms, strict=True)]
        corr = min(map_correlation(p.anomaly_map, e.anomaly_map) for p, e in zip(preds, base, strict=True))
        map_diff = max(float(np.abs(p.anomaly_map - e.anomaly_map).max()) for p, e in zip(preds, base, strict=True))
        score_diff = max(abs(p.score - e.score) for p, e in zip(preds, base, strict=True))
        decision_diff = max(abs(a - b) for a, b in zip(decision[name], decision["torch"], strict=True))
        agree = (
            sum((a > threshold) == (b > threshold) for a, b in zip(decision[name], decision["torch"], strict=True))
            if threshold is not None
            else None
        )
        speedup = statistics.median(ratios)
        verdict_text = f"{agree}/{len(frames)}" if agree is not None else "-"
        section.rows.append(
            f"{name:14} {p50(frame_ms):9.1f} {speedup:8.2f}x {min(ratios):5.2f}x {verdict_text:>9} {corr:9.5f} "
            f"{map_diff:11.2e} {score_diff:12.2e} {decision_diff:12.2e}"
        )
        rows[name] = {
            "frame_ms": frame_ms,
            "speedup_median": speedup,
            "speedup_min": min(ratios),
            "verdicts_agree": agree,
            "min_map_correlation": corr,
            "max_map_diff": map_diff,
            "max_score_diff": score_diff,
            "max_decision_diff": decision_diff,
        }
        if name == "torch":
            continue
        goal = SPEED_GOALS.get(name, 1.5)
        section.targets.append(
            Target(f"{mode} {name}: frame time / torch fp32 (goal >= {goal:g}x)", 1 / speedup, 1 / goal)
        )
        if name in SPEED_GOALS:
            if agree is not None:
                section.targets.append(
                    Target(f"{mode} {name}: verdicts differing from fp32", len(frames) - agree, 0, "")
                )
            section.targets.append(
                Target(f"{mode} {name}: 1 - min map correlation", 1 - corr, 1 - CORRELATION_GOAL, "")
            )
        else:
            section.targets.append(
                Target(f"{mode} {name}: max |map diff| + |score diff|", map_diff + score_diff, PARITY, "")
            )
    return {"threshold": threshold, "labels": labels, "decision_scores": decision, "runtimes": rows}


def run(args: argparse.Namespace) -> Section:
    """Both modes (training-free, full with random heads): each runtime against torch fp32 on the same frames."""
    args.parity_data = getattr(args, "parity_data", None) or DEFAULT_PARITY_DATA
    source = str(args.parity_data) if (args.parity_data / "train").is_dir() else "synthetic frames"
    section = Section("runtime", f"backbone runtimes vs torch fp32 ({args.config}, batch 1, per frame; {source})")
    modes = {mode: run_mode(args, mode, heads, section) for mode, heads in MODES.items()}
    section.data = {"config": args.config, "threads": torch.get_num_threads(), "random_init": args.random_init}
    section.data["modes"] = modes
    return section
