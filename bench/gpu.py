"""GPU measurement in one go (bench/gpu.sh): paper and edge, random init, eager vs torch.compile vs CUDA graphs.

Per config and compile mode: batch-1 predict p50/p99, the model-stage sum (forward to maps), and throughput at
batch 8 and 32 (images/s of whole predicts). Stops starting new runs past --budget-s so the script ends in time
(compiling ViT-L takes minutes); what was skipped is recorded. Without CUDA it runs the tiny config on the CPU,
eager only, so the script and its JSON can be checked anywhere.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from bench.common import interleaved, p50, percentile, photo_like
from model import create_detector


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line of `python -m bench.gpu`."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.gpu", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", nargs="+", default=["paper", "edge"])
    parser.add_argument("--modes", nargs="+", default=["off", "cudagraphs", "compile"], help="DCPSFR_COMPILE values")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32], help="throughput batches")
    parser.add_argument("--repeats", type=int, default=30, help="batch-1 predicts timed per run (default: 30)")
    parser.add_argument("--budget-s", type=float, default=420, help="start no new run after this (default: 420)")
    parser.add_argument("--image-size", type=int, nargs=2, default=[900, 900], metavar=("W", "H"))
    parser.add_argument("--json", type=Path, default=Path("gpu-results.json"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Measure every (compile mode, config) pair within --budget-s, print one line each and write the JSON after every
    run; returns 0."""
    args = parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda:
        print("no CUDA device: CPU fallback (tiny config, eager, 3 repeats) to check the script only")
        args.configs, args.modes, args.batch_sizes, args.repeats = ["tiny"], ["off"], [2], 3
    device = "cuda" if cuda else "cpu"
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch": torch.__version__,
        "runs": [],
    }
    start = time.monotonic()
    for mode in args.modes:  # every config eagerly first: the baseline is never lost to the budget
        for config in args.configs:
            if time.monotonic() - start > args.budget_s:
                report["runs"].append({"config": config, "compile": mode, "skipped": "time budget (--budget-s)"})
                print(f"{config:6} {mode:10} skipped: time budget")
                continue
            try:
                run = measure(config, mode, device, args)
            except Exception as err:  # one failing mode (e.g. compile) must not lose the other figures
                run = {"config": config, "compile": mode, "error": f"{type(err).__name__}: {err}"}
            report["runs"].append(run)
            if cuda:
                torch.cuda.empty_cache()  # the detector of this run is gone
            print(summary(run), flush=True)
            args.json.write_text(json.dumps(report, indent=2))  # after every run: a timeout keeps what was done
    report["seconds"] = round(time.monotonic() - start, 1)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"JSON: {args.json}")
    return 0


def measure(config: str, mode: str, device: str, args: argparse.Namespace) -> dict:
    """One config in one DCPSFR_COMPILE mode: set-up time, batch-1 p50/p99 and stages (ms), throughput per batch size
    (images/s) and, on CUDA, peak memory (MiB)."""
    began = time.monotonic()
    det = create_detector(config, device=device, random_init=True, heads_file="random", compile_mode=mode)
    size = tuple(args.image_size)
    refs = det.fit_references([photo_like(size, seed) for seed in range(4)])  # K = 4
    one = [photo_like(size, 100)]
    for _ in range(3):  # warm-up: compiles / records the graphs for batch 1
        det.predict(one, refs)
    ready_s = time.monotonic() - began
    times = interleaved({"b1": lambda: det.predict(one, refs)}, args.repeats, det.device, warmup=0)["b1"]
    stages = det.predict(one, refs)[0].timings_ms
    run = {
        "config": config,
        "compile": mode,
        "runtime": det.runtime.name,
        "setup_s": round(ready_s, 1),
        "batch1_p50_ms": p50(times),
        "batch1_p99_ms": percentile(times, 99),
        "batch1_stages_ms": stages,
        "batch1_model_ms": sum(v for k, v in stages.items() if k != "preprocess"),
        "throughput": {},
    }
    for batch in args.batch_sizes:
        frames = [photo_like(size, 200 + i) for i in range(batch)]
        det.predict(frames, refs)  # warm-up at this batch size
        batch_times = interleaved({"b": lambda f=frames: det.predict(f, refs)}, 5, det.device, warmup=1)["b"]
        run["throughput"][str(batch)] = round(1000.0 * batch / p50(batch_times), 1)
    if det.device.type == "cuda":
        run["peak_memory_mib"] = round(torch.cuda.max_memory_allocated(det.device) / 2**20)
        torch.cuda.reset_peak_memory_stats(det.device)
    return run


def summary(run: dict) -> str:
    """One printable line for a run of `measure` (or its error / skip reason)."""
    head = f"{run['config']:6} {run['compile']:10}"
    if "error" in run or "skipped" in run:
        return f"{head} {run.get('error') or run.get('skipped')}"
    rates = " ".join(f"b{b}={v:.0f}/s" for b, v in run["throughput"].items())
    return (
        f"{head} batch 1 p50 {run['batch1_p50_ms']:.1f} ms p99 {run['batch1_p99_ms']:.1f} ms "
        f"(model {run['batch1_model_ms']:.1f} ms) {rates} setup {run['setup_s']:.0f} s"
    )


if __name__ == "__main__":
    sys.exit(main())
