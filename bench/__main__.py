"""python -m bench: every performance benchmark side by side, one table per section, targets as ratios, JSON.

Sections (run all, or pick with --only):
  stages      in-process latency per stage (decode ... encode) at batch 1 and 8      --config (edge, random init)
  runtime     torch fp32 vs OpenVINO (fp32, int8, bf16), ONNX Runtime: per frame + verdicts --config
  fit         reference fit + calibration for K = 1 and 4                           --config
  memory      RSS and bytes on disk per product; start-up with 100 products         --config
  bank        bank search FAISS vs torch, 4k .. 1M tokens
  http        HTTP p50/p95 of one image vs in-process predict (overhead ratio),     --service-config (tiny)
              full answer (PNG) beside verdict only (JPEG): overhead vs the 3 ms goal
  throughput  service img/s at concurrency 1, 4, 16 with batching on and off        --service-config
  replicas    new version -> other replica delay; start-up with 100 stored products --service-config
  station     trigger -> result over Modbus TCP, OPC UA, MQTT vs direct HTTP           --service-config
  records     record inserts/s (SQLite; PostgreSQL with DCPSFR_BENCH_DATABASE_URL), CSV export memory for
              100k records, spool recovery, /inspect p50 with and without records
Timings on a shared machine drift: comparisons are interleaved and given as ratios. --quick: fewer repeats and
requests, for a first look (a full run takes ~30 min on 2 busy cores). GPU figures: bench/gpu.sh.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import torch

from bench.common import Section
from model import ConfigError

SECTIONS = ("stages", "runtime", "fit", "memory", "bank", "http", "throughput", "replicas", "station", "records")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line of `python -m bench`; fills in
    `repeats`, `server_flags` and puts torch first in `runtimes`."""
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="+", choices=SECTIONS, metavar="SECTION", help="run these sections only")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and requests (rougher figures)")
    parser.add_argument("--config", default="edge", help="model config of the in-process sections (default: edge)")
    parser.add_argument(
        "--no-random-init",
        dest="random_init",
        action="store_false",
        help="use the weight files instead of real-size random weights (default: random init, timing only)",
    )
    parser.add_argument("--service-config", default="tiny", help="config of the started services (default: tiny)")
    parser.add_argument("--device", default="cpu", help="in-process sections (default: cpu; GPU: bench/gpu.sh)")
    parser.add_argument(
        "--runtime",
        default="torch",
        help="backbone runtime of stages/fit: torch, openvino, onnxruntime, openvino-int8, openvino-bf16",
    )
    parser.add_argument(
        "--runtimes",
        nargs="+",
        default=["torch", "openvino", "onnxruntime", "openvino-int8"],
        help="compared in the runtime section (also openvino-bf16, on CPUs with native bf16)",
    )
    parser.add_argument(
        "--parity-data",
        type=Path,
        default=None,
        help="runtime section's test set, MVTec layout (default: ../shared/data/mvtec_ad/bottle_xs)",
    )
    parser.add_argument("--runtime-cache-dir", type=Path, default=None, help="ONNX exports (default: weights/...)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="stages section (default: 1 8)")
    parser.add_argument("--image-size", type=int, nargs=2, default=[900, 900], metavar=("W", "H"))
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per figure (default: 5, quick 2)")
    parser.add_argument("--json", type=Path, default=Path("bench-results.json"), help="default: %(default)s")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (2 if args.quick else 5)
    args.server_flags = ["--random-init"] if args.random_init and args.service_config != "tiny" else []
    if "torch" not in args.runtimes:
        args.runtimes = ["torch", *args.runtimes]  # the baseline of every ratio
    return args


def print_section(section: Section) -> None:
    """Print one section's title and its table rows to stdout."""
    print(f"\n== {section.name}: {section.title}")
    for row in section.rows:
        print(f"   {row}")


def main(argv: list[str] | None = None) -> int:
    """Run the chosen sections in turn, print their tables and the targets, and write the JSON report; returns 0,
    or 2 with one line when a section's config or weight files cannot be used (the sections before it printed)."""
    args = parse_args(argv)
    chosen = args.only or SECTIONS
    conditions = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_start": os.getloadavg(),
        "torch": torch.__version__,
        "quick": args.quick,
    }
    print(f"bench: {', '.join(chosen)} | {conditions['cpus']} CPUs, load {conditions['load_average_start'][0]:.1f}")
    sections: list[Section] = []
    for name in chosen:
        start = time.perf_counter()
        try:
            section = importlib.import_module(f"bench.{name}").run(args)
        except (ConfigError, FileNotFoundError) as err:  # WeightsMissingError too: it names the fetch command
            print(f"error: bench {name}: {err}", file=sys.stderr)
            return 2
        section.data["seconds"] = round(time.perf_counter() - start, 1)
        sections.append(section)
        print_section(section)
    targets = [t for s in sections for t in s.targets]
    if targets:
        print("\n== targets")
        for target in targets:
            print(f"   {target.line()}")
    conditions["load_average_end"] = os.getloadavg()
    report = {"conditions": conditions, "sections": {s.name: asdict(s) for s in sections}}
    args.json.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nJSON: {args.json} (load average at the end {conditions['load_average_end'][0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
