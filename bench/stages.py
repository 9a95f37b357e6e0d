"""In-process latency per stage: decode, preprocess, DINOv2, CLIP, bank search, heads, post-processing, encode."""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

from bench.common import Section, Target, bench_detector, p50, photo_like, png_bytes
from service.imaging.decode import decode_image
from service.imaging.encode import heatmap_png, mask_png

MODEL_STAGES = ("preprocess", "dino", "clip", "bank_search", "heads", "postprocess")
STAGES = ("decode", *MODEL_STAGES, "encode")


def run(args: argparse.Namespace) -> Section:
    """Median ms per stage (decode, model stages, encode) at each batch size, K = 4; checks that bank search stays under
    10 % of predict at batch 1."""
    section = Section("stages", f"latency per stage, in-process ({args.config}, runtime={args.runtime}, ms)")
    det = bench_detector(args)
    size = tuple(args.image_size)
    refs = det.fit_references([photo_like(size, seed) for seed in range(4)])  # K = 4
    pngs = [png_bytes(photo_like(size, 100 + i)) for i in range(max(args.batch_sizes))]
    section.rows.append(f"{'stage':12}" + "".join(f" {f'batch {b}':>12} {'per image':>10}" for b in args.batch_sizes))
    table: dict[int, dict[str, float]] = {}
    for batch in args.batch_sizes:
        table[batch] = batch_stages(det, refs, pngs[:batch], args.repeats)
    for stage in (*STAGES, "total"):
        cells = "".join(f" {table[b].get(stage, 0.0):12.1f} {table[b].get(stage, 0.0) / b:10.1f}" for b in table)
        section.rows.append(f"{stage:12}{cells}")
    model_ms = sum(table[1][stage] for stage in MODEL_STAGES) if 1 in table else 0.0
    if model_ms > 0:
        share = table[1]["bank_search"] / model_ms
        section.targets.append(Target("bank search / predict at K = 4, batch 1", share, 0.10))
    section.data = {"config": args.config, "runtime": det.runtime.name, "image_size": size, "K": 4, "ms": table}
    return section


def batch_stages(det, refs, pngs: list[bytes], repeats: int) -> dict[str, float]:
    """Median ms per stage for one batch (decode and encode summed over its images), plus the total."""
    samples: dict[str, list[float]] = defaultdict(list)
    for attempt in range(repeats + 1):  # the first is a warm-up
        start = time.perf_counter()
        images = [decode_image(data, "frame.png", 100_000_000) for data in pngs]
        decode_ms = (time.perf_counter() - start) * 1000.0
        predictions = det.predict(images, refs)
        start = time.perf_counter()
        for prediction in predictions:
            mask_png(prediction.anomaly_map, 0.5)
            heatmap_png(prediction.anomaly_map, 0.5)
        encode_ms = (time.perf_counter() - start) * 1000.0
        if attempt == 0:
            continue
        samples["decode"].append(decode_ms)
        for stage in MODEL_STAGES:
            samples[stage].append(predictions[0].timings_ms.get(stage, 0.0))
        samples["encode"].append(encode_ms)
        samples["total"].append(decode_ms + sum(predictions[0].timings_ms.values()) + encode_ms)
    return {stage: round(p50(values), 2) for stage, values in samples.items()}
