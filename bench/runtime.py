"""Backbone runtimes side by side: torch fp32 vs OpenVINO vs ONNX Runtime, whole predict, interleaved, plus parity."""

from __future__ import annotations

import argparse

import numpy as np
import torch

from bench.common import Section, Target, interleaved, p50, photo_like
from model import create_detector
from model.runtime import RUNTIMES

PARITY = 1e-3


def run(args: argparse.Namespace) -> Section:
    """Whole-predict p50 per backbone runtime (torch, openvino, onnxruntime that are installed), speed-up over torch,
    and the map and score difference from torch."""
    runtimes = [r for r in args.runtimes if r in RUNTIMES]
    section = Section("runtime", f"backbone runtimes, whole predict ({args.config}, full mode, batch 1, interleaved)")
    size = tuple(args.image_size)
    references = [photo_like(size, seed) for seed in range(4)]
    frames = [photo_like(size, 100)]
    detectors, refs = {}, {}
    for name in runtimes:
        detectors[name] = create_detector(
            args.config,
            device="cpu",
            random_init=args.random_init,
            heads_file="random",
            runtime=name,
            runtime_cache_dir=args.runtime_cache_dir,
        )
        refs[name] = detectors[name].fit_references(references)
    expected = detectors["torch"].predict(frames, refs["torch"])[0]
    times = interleaved(
        {name: (lambda n=name: detectors[n].predict(frames, refs[n])) for name in runtimes}, args.repeats
    )
    base = p50(times["torch"])
    section.rows.append(
        f"{'runtime':12} {'p50 ms':>9} {'min ms':>9} {'speed-up':>9} {'max |map diff|':>15} {'|score diff|':>13}"
    )
    rows = {}
    for name in runtimes:
        got = detectors[name].predict(frames, refs[name])[0]
        map_diff = float(np.abs(got.anomaly_map - expected.anomaly_map).max())
        score_diff = abs(got.score - expected.score)
        speedup = base / p50(times[name])
        rows[name] = {"p50_ms": p50(times[name]), "ms": times[name], "speedup": speedup}
        rows[name] |= {"max_map_diff": map_diff, "score_diff": score_diff}
        timing = f"{p50(times[name]):9.1f} {min(times[name]):9.1f} {speedup:8.2f}x"
        section.rows.append(f"{name:12} {timing} {map_diff:15.2e} {score_diff:13.2e}")
        if name != "torch":
            section.targets.append(
                Target(f"{name}: predict time / torch fp32 (goal >= 1.5x faster)", 1 / speedup, 1 / 1.5)
            )
            section.targets.append(
                Target(f"{name}: max |map diff| + |score diff| vs torch", map_diff + score_diff, PARITY, "")
            )
    section.data = {"config": args.config, "threads": torch.get_num_threads(), "runtimes": rows}
    return section
