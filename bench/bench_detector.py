"""Detector latency and throughput: fit_references and predict at several batch sizes, both modes, side by side.

Numbers, not assertions. Without real weight files use --random-init (same architecture, random values:
timing is the same, the maps mean nothing). Example:
    .venv/bin/python bench/bench_detector.py --config edge --random-init --device cpu --batch-sizes 1 4
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import numpy as np
import torch
from PIL import Image

from model import create_detector


def frames(n: int, size: tuple[int, int], seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]


def timed(fn, repeats: int, device: torch.device) -> list[float]:
    out = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        out.append((time.perf_counter() - start) * 1000.0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="edge")
    parser.add_argument("--random-init", action="store_true", help="random weights of the real architecture")
    parser.add_argument("--weights-dir", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--shots", type=int, default=4)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--image-size", type=int, nargs=2, default=[900, 900], metavar=("W", "H"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--modes", nargs="+", default=["training-free", "full"])
    args = parser.parse_args()

    print(f"config={args.config} random_init={args.random_init} torch={torch.__version__}")
    print(f"threads={torch.get_num_threads()} frames={args.image_size[0]}x{args.image_size[1]} K={args.shots}")
    print(f"{'mode':14} {'device':6} {'batch':>5} {'ms/batch p50':>13} {'ms/image':>9} {'img/s':>7}  stages (ms)")
    for mode in args.modes:
        bench_mode(args, mode)


def bench_mode(args: argparse.Namespace, mode: str) -> None:
    det = create_detector(
        args.config,
        weights_dir=args.weights_dir,
        device=args.device,
        random_init=args.random_init,
        heads="random" if mode == "full" else None,
    )
    size = tuple(args.image_size)
    refs_images = frames(args.shots, size, seed=1)
    fit_ms = statistics.median(timed(partial(det.fit_references, refs_images), 3, det.device))
    refs = det.fit_references(refs_images)
    print(f"{mode:14} {det.device.type:6} fit_references: {fit_ms:.1f} ms (bank {refs.bank_size} tokens)")
    for batch in args.batch_sizes:
        images = frames(batch, size, seed=2)
        det.predict(images, refs)  # warm-up
        p50 = statistics.median(timed(partial(det.predict, images, refs), args.repeats, det.device))
        stages = det.predict(images, refs)[0].timings_ms
        row = f"{mode:14} {det.device.type:6} {batch:5d} {p50:13.1f} {p50 / batch:9.1f} {1000 * batch / p50:7.1f}"
        print(f"{row}  {stages}")
    if det.device.type == "cuda":
        print(f"{mode:14} peak GPU memory: {torch.cuda.max_memory_allocated(det.device) / 2**20:.0f} MiB")
        torch.cuda.reset_peak_memory_stats(det.device)


if __name__ == "__main__":
    main()
