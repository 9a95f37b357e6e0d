"""Reproduce the paper's table in one command: weights, datasets, heads trained both ways, 1/2/4-shot x 3 seeds.

    python -m model.training.reproduce --dry-run     # the plan: stages, disk, estimated time on this device
    python -m model.training.reproduce               # run it (internet for the downloads, a GPU to finish in hours)

Stages, in order; each one that finishes writes a stamp <run-dir>/stamps/<stage>.json, and a rerun skips
stamped stages (`--redo STAGE` forgets that stage and every later one). Training resumes from its epoch
checkpoint and the downloads from their .part files, so an interrupted run loses little.

  weights      the config's CLIP and DINOv2 weights (python -m model.weights fetch)
  mvtec, visa  the datasets from their official sources (python -m model.training.data fetch), licences printed first
  train-mvtec  heads trained on MVTec AD's annotated test split (the field's cross-dataset protocol) ...
  eval-visa    ... and evaluated on VisA, K = 1, 2, 4 references, 3 seeds, the seven metrics
  train-visa   heads trained on VisA's test split ...
  eval-mvtec   ... and evaluated on MVTec AD
  report       <run-dir>/results.md: our means beside the paper's and AnomalyDINO's published figures
  install      the heads copied to <weights-dir>/heads/ with their sidecars (<config>.safetensors = trained on
               MVTec AD, the default the detector and the service load; both directions also by name)

Training uses the paper's settings (SPEC.md, `model.training.train` defaults): 25 epochs, batch 8, Adam 0.01 for the
prompts and 1e-3 for the other heads, K drawn from 1/2/4, focal alpha 0.9 gamma 2, frozen backbones.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from model import create_detector, resolve_device
from model.argtypes import positive_int
from model.metrics import pixel_metrics
from model.training.data.datasets import DatasetError, open_dataset
from model.training.data.fetch import EXTRACT_RATIO, SOURCES, FetchError, fetch_dataset
from model.training.evaluate import METRICS, CategoryRun, EvalResult, evaluate, write_results
from model.training.train import TrainOptions, git_commit, train
from model.weights import (
    DEFAULT_WEIGHTS_DIR,
    WeightsMissingError,
    checksum_path,
    heads_path,
    load_manifest,
    write_checksum,
)
from model.weights.fetching import fetch as fetch_weights

log = logging.getLogger(__name__)

DIRECTIONS = (("mvtec", "visa"), ("visa", "mvtec"))  # (train on, evaluate on)
TITLES = {"mvtec": "MVTec AD", "visa": "VisA"}
FOLDERS = {"mvtec": "mvtec_ad", "visa": "visa"}

# --- published figures (%, mean over categories) -----------------------------------------------------------------
# DCP-SFR: /work/shared/method/dcp-sfr-paper-summary.md ("Main Results", "Ablation Study", 4-shot sentence) and
# SPEC.md "Reference numbers". The summary gives VisA 1-shot p-F1-max as 44.6 (ablation table) and 44.9 (text);
# the table's value is used. Missing cells were not in those documents.
PAPER = {
    ("mvtec", 1): {"i_auroc": 97.3, "p_auroc": 96.9, "p_ap": 61.2},
    ("mvtec", 4): {"i_auroc": 98.0, "p_auroc": 97.5},
    ("visa", 1): {"i_auroc": 92.0, "p_auroc": 98.2, "p_ap": 39.9, "p_f1_max": 44.6},
    ("visa", 4): {"p_f1_max": 47.1},
}
# AnomalyDINO (Damm et al., WACV 2025, arXiv:2405.14529), 1-shot, as the DCP-SFR paper quotes them (same summary);
# the MVTec AD i-AUROC 96.6 is also in AnomalyDINO's own abstract. Its 2- and 4-shot table could not be read here.
ANOMALYDINO = {
    ("mvtec", 1): {"i_auroc": 96.6, "p_auroc": 96.8, "p_ap": 56.5},
    ("visa", 1): {"i_auroc": 87.4, "p_auroc": 97.8},
}

# --- what the estimates rest on ------------------------------------------------------------------------------------
# Per config, counted once with torch.utils.flop_counter.FlopCounterMode on the real-size architecture with random
# weights (create_detector(cfg, random_init=True)), one 900x900 frame: backbones = features.embed(with_clip=True);
# heads = predict(K=4) minus backbones; cache = one FeatureCache entry (fp16).
COSTS = {
    "paper": {"backbone_gflop": 853.3, "heads_gflop": 81.5, "cache_mb": 6.82},
    "edge": {"backbone_gflop": 66.5, "heads_gflop": 19.6, "cache_mb": 1.99},
    "tiny": {"backbone_gflop": 0.1, "heads_gflop": 0.02, "cache_mb": 0.05},
}
# Dataset sizes as published: MVTec AD 3629 train / 1725 test images, 15 categories; VisA 1-class split
# (split_csv/1cls.csv) 8659 train / 2162 test, 12 categories. VisA frames are about 1.5:1, which the backbones keep.
COUNTS = {
    "mvtec": {"train": 3629, "test": 1725, "categories": 15, "aspect": 1.0},
    "visa": {"train": 8659, "test": 2162, "categories": 12, "aspect": 1.5},
}
# Share of the measured dense-matmul rate that a forward reaches. CPU: measured here, the edge backbones at 900x900
# against a 1024x1024 fp32 matmul in the same process, 0.22-0.34 over three tries (2 busy cores). CUDA: assumed
# (bf16 ViT inference at batch 8 typically reaches 40-60% of matmul throughput); not measured, no GPU here.
EFFICIENCY = {"cpu": 0.3, "cuda": 0.5}
BANDWIDTH_MB_S = 20.0  # assumed download speed
XZ_MB_S, TAR_MB_S, DISK_MB_S = 40.0, 300.0, 500.0  # assumed extraction and cache-read speeds


class StageError(RuntimeError):
    """A stage could not run; the message is one line that says why and what to do."""


@dataclass
class Plan:
    """Everything the stages need, resolved from the command line."""

    config: str
    device: str
    data_root: Path
    run_dir: Path
    weights_dir: Path
    epochs: int = 25
    batch_size: int = 8
    shots: list[int] = field(default_factory=lambda: [1, 2, 4])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    eval_size: int = 256
    urls: dict[str, str | None] = field(default_factory=dict)
    sha256s: dict[str, str | None] = field(default_factory=dict)
    keep_archives: bool = False
    progress: bool = True

    def dataset_root(self, kind: str) -> Path:
        """Where dataset `kind` (mvtec or visa) goes: <data-root>/mvtec_ad or <data-root>/visa."""
        return self.data_root / FOLDERS[kind]

    def spec(self, kind: str) -> str:
        """The `KIND:PATH` spec of dataset `kind`."""
        return f"{kind}:{self.dataset_root(kind)}"

    def trained_heads(self, source: str) -> Path:
        """The heads file trained on dataset `source`: <run-dir>/heads/<config>-from-<source>.safetensors."""
        return self.run_dir / "heads" / f"{self.config}-from-{source}.safetensors"

    def stamp(self, stage: str) -> Path:
        """The stamp file that marks `stage` as done: <run-dir>/stamps/<stage>.json."""
        return self.run_dir / "stamps" / f"{stage}.json"


@dataclass(frozen=True)
class Stage:
    """One reproduction step: its run function (returns what goes in its stamp)
    and its disk (GB) and time (s) estimates."""

    name: str
    about: str
    run: Callable[[Plan], dict]
    disk_gb: Callable[[Plan], float]
    seconds: Callable[[Plan, DeviceSpeed], float]


# --- the stages ------------------------------------------------------------------------------------------------------


def run_weights(plan: Plan) -> dict:
    """Fetch the config's backbone weights; raises StageError with one line when the download fails (WeightsMissingError
    passes through)."""
    try:
        files = fetch_weights(plan.config, plan.weights_dir, with_clip=True)  # training needs CLIP
    except WeightsMissingError:
        raise
    except Exception as error:  # hub libraries raise many types (requests, huggingface_hub, urllib); one line each
        raise StageError(
            f"could not download the {plan.config} backbone weights ({type(error).__name__}: "
            f"{str(error).strip().splitlines()[0] if str(error).strip() else 'no message'}); "
            "this needs internet access to the model hubs"
        ) from error
    return {"files": [str(f) for f in files]}


def run_dataset(kind: str) -> Callable[[Plan], dict]:
    """The stage function that downloads and extracts dataset `kind` and lists its categories."""

    def run(plan: Plan) -> dict:
        root = fetch_dataset(
            kind,
            plan.dataset_root(kind),
            url=plan.urls.get(kind),
            sha256=plan.sha256s.get(kind),
            keep_archive=plan.keep_archives,
            progress=plan.progress,
        )
        return {"root": str(root), "categories": list(open_dataset(plan.spec(kind)).categories)}

    return run


def run_train(source: str) -> Callable[[Plan], dict]:
    """The stage function that trains heads on dataset `source` (resuming from its checkpoint)."""

    def run(plan: Plan) -> dict:
        out = train(
            TrainOptions(
                config=plan.config,
                data=plan.spec(source),
                shots=list(plan.shots),
                epochs=plan.epochs,
                batch_size=plan.batch_size,
                device=plan.device,
                weights_dir=plan.weights_dir,
                run_dir=plan.run_dir / f"train-{source}",
                out=plan.trained_heads(source),
                resume=True,
            )
        )
        return {"heads": str(out)}

    return run


def run_eval(source: str, target: str) -> Callable[[Plan], dict]:
    """The stage function that evaluates the heads trained on `source` on dataset `target` and writes
    <run-dir>/eval-<target>/."""

    def run(plan: Plan) -> dict:
        detector = create_detector(
            plan.config, weights_dir=plan.weights_dir, device=plan.device, heads_file=plan.trained_heads(source)
        )
        dataset = open_dataset(plan.spec(target))
        result = evaluate(
            detector, dataset, plan.shots, plan.seeds, plan.eval_size, plan.batch_size, None, plan.spec(target)
        )
        write_results(result, plan.shots, plan.run_dir / f"eval-{target}")
        return {"mean": {str(k): result.table(k)["mean"] for k in plan.shots}, "mode": result.mode}

    return run


def run_report(plan: Plan) -> dict:
    """Write <run-dir>/results.md from both evaluations (raises StageError when one is missing) and print it."""
    results = {target: _load_result(plan, target) for _, target in DIRECTIONS}
    path = plan.run_dir / "results.md"
    path.write_text(format_report(plan, results))
    print(path.read_text())
    return {"report": str(path)}


def run_install(plan: Plan) -> dict:
    """Copy both heads (+ .sha256, + .json sidecar with the means measured here) into <weights-dir>/heads/."""
    installed = []
    for source, target in DIRECTIONS:
        result = _load_result(plan, target)
        names = [f"{plan.config}-from-{source}.safetensors"]
        if source == "mvtec":
            names.append(heads_path(plan.weights_dir, plan.config).name)  # the default the detector loads
        for name in names:
            installed.append(str(_install_heads(plan, source, target, result, plan.weights_dir / "heads" / name)))
    return {"installed": installed}


def _install_heads(plan: Plan, source: str, target: str, result: EvalResult, dest: Path) -> Path:
    src = plan.trained_heads(source)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    write_checksum(dest)
    info = json.loads(src.with_suffix(".json").read_text())
    info["reproduce"] = {
        "trained_on": plan.spec(source),
        "evaluated_on": plan.spec(target),
        "shots": plan.shots,
        "seeds": plan.seeds,
        "mean_percent": {
            str(k): {m: round(100 * v, 2) for m, v in result.table(k)["mean"].items()} for k in plan.shots
        },
        "report": str(plan.run_dir / "results.md"),
    }
    dest.with_suffix(".json").write_text(json.dumps(info, indent=2, default=str))
    log.info("installed %s (%s)", dest, checksum_path(dest).read_text().split()[0][:16])
    return dest


def _load_result(plan: Plan, target: str) -> EvalResult:
    path = plan.run_dir / f"eval-{target}" / "results.json"
    if not path.is_file():
        raise StageError(f"{path} is missing: run the eval-{target} stage first (--redo eval-{target})")
    payload = json.loads(path.read_text())
    runs = [CategoryRun(**run) for run in payload["runs"]]
    fields = {k: payload[k] for k in ("config", "data", "mode", "random_weights", "eval_size")}
    return EvalResult(**fields, runs=runs)


# --- the report ------------------------------------------------------------------------------------------------------


def format_report(plan: Plan, results: dict[str, EvalResult]) -> str:
    """Markdown: per evaluated dataset, rows K x {ours, paper, AnomalyDINO}, the seven metrics in %."""
    lines = [
        f"# Reproduction: config `{plan.config}`, heads trained on one dataset and evaluated on the other",
        "",
        f"Generated {datetime.now(UTC).isoformat(timespec='seconds')} at commit {git_commit()[:12]}; "
        f"{len(plan.seeds)} seeds ({', '.join(map(str, plan.seeds))}), metrics at {plan.eval_size}x{plan.eval_size}, "
        "mean over categories, %. `—`: not published in the sources below.",
        "",
    ]
    if any(r.random_weights for r in results.values()):
        lines += ["**RANDOM WEIGHTS: these numbers mean nothing about accuracy (pipeline check only).**", ""]
    header = "| K | method | " + " | ".join(m.replace("_", "-") for m in METRICS) + " |"
    for source, target in DIRECTIONS:
        result = results[target]
        lines += [
            f"## {TITLES[target]} (heads trained on {TITLES[source]})",
            "",
            header,
            "|" + "---|" * (len(METRICS) + 2),
        ]
        for k in plan.shots:
            ours = {m: 100 * v for m, v in result.table(k)["mean"].items()}
            lines.append(_row(k, f"ours ({result.mode})", ours))
            for name, figures in (("DCP-SFR paper", PAPER), ("AnomalyDINO", ANOMALYDINO)):
                if (target, k) in figures:
                    lines.append(_row(k, name, figures[(target, k)]))
        lines += ["", f"Per category: `{plan.run_dir / f'eval-{target}' / 'results.md'}`.", ""]
    lines += [
        "Sources: DCP-SFR (CVPR 2026) figures as summarised in `/work/shared/method/` (SPEC.md, paper summary); "
        "AnomalyDINO (Damm et al., WACV 2025, arXiv:2405.14529) 1-shot figures as quoted by the DCP-SFR paper. "
        "AnomalyDINO's own 2- and 4-shot table was not available to us, so those rows are left out.",
        "",
    ]
    return "\n".join(lines)


def _row(k: int, method: str, values: dict[str, float]) -> str:
    cells = [f"{values[m]:.1f}" if m in values and np.isfinite(values[m]) else "—" for m in METRICS]
    return f"| {k} | {method} | " + " | ".join(cells) + " |"


# --- estimates -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceSpeed:
    """Measured on the detected device in well under a second each; the basis of every time estimate."""

    name: str
    gflop_s: float  # dense matmul (bf16 on CUDA, fp32 on CPU) x EFFICIENCY of the device type
    efficiency: float
    decode_s: float  # one ~1024x1024 PNG decoded on this CPU
    metric_s_per_pixel: float  # the four pixel metrics, per pixel at the evaluation size


def measure_speed(device: torch.device) -> DeviceSpeed:
    """Usable GFLOP/s (best of 5 dense matmuls, bf16 on CUDA, fp32 on CPU, times EFFICIENCY), PNG decode time and
    pixel-metric time on `device`."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        a = torch.randn(4096, 4096, device=device, dtype=torch.bfloat16)
        flop, sync = 2 * 4096**3, lambda: torch.cuda.synchronize(device)
    else:
        name = f"CPU, {torch.get_num_threads()} threads"
        a = torch.randn(1024, 1024)
        flop, sync = 2 * 1024**3, lambda: None
    a @ a
    best = float("inf")
    for _ in range(5):  # the best of a few short runs: the device's rate, not a neighbour's load
        sync()
        start = time.perf_counter()
        a @ a
        sync()
        best = min(best, time.perf_counter() - start)
    efficiency = EFFICIENCY["cuda" if device.type == "cuda" else "cpu"]
    return DeviceSpeed(name, flop / best / 1e9 * efficiency, efficiency, _decode_seconds(), _metric_seconds_per_pixel())


def _decode_seconds() -> float:
    import io

    rng = np.random.default_rng(0)
    smooth = np.linspace(0, 200, 1024, dtype=np.float32)[None, :, None] + rng.normal(0, 8, (1024, 1024, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(smooth, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    start = time.perf_counter()
    Image.open(io.BytesIO(buffer.getvalue())).convert("RGB").load()
    return time.perf_counter() - start


def _metric_seconds_per_pixel() -> float:
    rng = np.random.default_rng(0)
    maps = rng.random((8, 256, 256)).astype(np.float32)
    masks = np.zeros(maps.shape, dtype=bool)
    masks[:4, 80:160, 80:160] = True
    start = time.perf_counter()
    pixel_metrics(maps, masks)
    return (time.perf_counter() - start) / maps.size


def _dataset_seconds(kind: str) -> Callable[[Plan, DeviceSpeed], float]:
    def seconds(plan: Plan, speed: DeviceSpeed) -> float:
        mb = SOURCES[kind].archive_gb * 1000
        unpack = XZ_MB_S if SOURCES[kind].url.endswith(".xz") else TAR_MB_S
        return mb / BANDWIDTH_MB_S + mb / DISK_MB_S + mb / unpack

    return seconds


def _train_seconds(source: str) -> Callable[[Plan, DeviceSpeed], float]:
    def seconds(plan: Plan, speed: DeviceSpeed) -> float:
        costs, counts = COSTS.get(plan.config, COSTS["paper"]), COUNTS[source]
        cached = counts["test"] + 16 * counts["categories"]  # queries + the reference pools
        forward = speed.decode_s + costs["backbone_gflop"] * counts["aspect"] / speed.gflop_s
        steps = plan.epochs * (counts["test"] // plan.batch_size)
        mean_k = float(np.mean(plan.shots))
        per_step = plan.batch_size * (
            3 * costs["heads_gflop"] / speed.gflop_s + (1 + mean_k) * costs["cache_mb"] / DISK_MB_S
        )
        return cached * forward + steps * per_step

    return seconds


def _eval_seconds(target: str) -> Callable[[Plan, DeviceSpeed], float]:
    def seconds(plan: Plan, speed: DeviceSpeed) -> float:
        costs, counts = COSTS.get(plan.config, COSTS["paper"]), COUNTS[target]
        runs = len(plan.shots) * len(plan.seeds)
        gflop = (costs["backbone_gflop"] + costs["heads_gflop"]) * counts["aspect"]
        predictions = runs * counts["test"] * (speed.decode_s + gflop / speed.gflop_s)
        references = len(plan.seeds) * sum(plan.shots) * counts["categories"] * speed.decode_s
        metrics = runs * counts["test"] * plan.eval_size**2 * speed.metric_s_per_pixel
        return predictions + references + metrics

    return seconds


def _weights_gb(plan: Plan) -> float:
    entries = load_manifest(plan.weights_dir)["configs"].get(plan.config, {})
    return sum(entry.get("size_mb", 0) for entry in entries.values()) / 1000


def _cache_gb(source: str) -> Callable[[Plan], float]:
    def disk(plan: Plan) -> float:
        counts = COUNTS[source]
        cached = counts["test"] + 16 * counts["categories"]
        return cached * COSTS.get(plan.config, COSTS["paper"])["cache_mb"] * counts["aspect"] / 1000

    return disk


STAGES: tuple[Stage, ...] = (
    Stage("weights", "backbone weights (CLIP + DINOv2)", run_weights, _weights_gb,
          lambda p, s: _weights_gb(p) * 1000 / BANDWIDTH_MB_S),
    Stage("mvtec", "MVTec AD download + extract", run_dataset("mvtec"),
          lambda p: SOURCES["mvtec"].archive_gb * (1 + EXTRACT_RATIO), _dataset_seconds("mvtec")),
    Stage("visa", "VisA download + extract", run_dataset("visa"),
          lambda p: SOURCES["visa"].archive_gb * (1 + EXTRACT_RATIO), _dataset_seconds("visa")),
    Stage("train-mvtec", "train heads on MVTec AD", run_train("mvtec"), _cache_gb("mvtec"), _train_seconds("mvtec")),
    Stage("eval-visa", "evaluate them on VisA", run_eval("mvtec", "visa"), lambda p: 0.01, _eval_seconds("visa")),
    Stage("train-visa", "train heads on VisA", run_train("visa"), _cache_gb("visa"), _train_seconds("visa")),
    Stage("eval-mvtec", "evaluate them on MVTec AD", run_eval("visa", "mvtec"), lambda p: 0.01, _eval_seconds("mvtec")),
    Stage("report", "results.md beside the published figures", run_report, lambda p: 0.0, lambda p, s: 1.0),
    Stage("install", "heads -> weights/heads/ with sidecars", run_install, lambda p: 0.0, lambda p, s: 1.0),
)  # fmt: skip
STAGE_NAMES = tuple(stage.name for stage in STAGES)


# --- running ---------------------------------------------------------------------------------------------------------


def forget(plan: Plan, stages: list[str]) -> None:
    """Delete the stamps of `stages` and of every stage after the earliest of them."""
    if not stages:
        return
    first = min(STAGE_NAMES.index(name) for name in stages)
    for stage in STAGES[first:]:
        plan.stamp(stage.name).unlink(missing_ok=True)


def run_all(plan: Plan, say: Callable[[str], None] = print) -> None:
    """Run every stage without a stamp in order, stamping each one that finishes; `say` gets the progress lines."""
    for stage in STAGES:
        stamp = plan.stamp(stage.name)
        if stamp.is_file():
            say(f"[{stage.name}] done before ({stamp}); skipped")
            continue
        say(f"[{stage.name}] {stage.about} ...")
        start = time.perf_counter()
        outputs = stage.run(plan)
        seconds = time.perf_counter() - start
        stamp.parent.mkdir(parents=True, exist_ok=True)
        record = {"stage": stage.name, "finished": datetime.now(UTC).isoformat(), "seconds": round(seconds, 1)}
        stamp.write_text(json.dumps(record | outputs, indent=2, default=str))
        say(f"[{stage.name}] done in {_duration(seconds)}")
    say(f"results: {plan.run_dir / 'results.md'}; heads: {plan.weights_dir / 'heads'}")


def format_plan(plan: Plan, speed: DeviceSpeed) -> str:
    """The --dry-run table: per stage done/todo, disk (GB) and estimated time, the totals against free disk, and what
    the estimates assume."""
    lines = [
        f"reproduce: config {plan.config}, device {speed.name}, epochs {plan.epochs}, batch {plan.batch_size}, "
        f"K {'/'.join(map(str, plan.shots))}, seeds {'/'.join(map(str, plan.seeds))}",
        f"  data {plan.data_root}   runs {plan.run_dir}   weights {plan.weights_dir}",
        "",
        f"{'stage':12} {'state':6} {'disk':>8} {'time':>9}  what",
    ]
    disk_total = seconds_total = 0.0
    for stage in STAGES:
        done = plan.stamp(stage.name).is_file()
        disk, seconds = (0.0, 0.0) if done else (stage.disk_gb(plan), stage.seconds(plan, speed))
        disk_total, seconds_total = disk_total + disk, seconds_total + seconds
        state = "done" if done else "todo"
        lines.append(f"{stage.name:12} {state:6} {disk:6.1f} GB {_duration(seconds):>9}  {stage.about}")
    free = shutil.disk_usage(_existing_parent(plan.data_root)).free / 1e9
    lines += [
        f"{'total':12} {'':6} {disk_total:6.1f} GB {_duration(seconds_total):>9}  "
        f"({free:.0f} GB free at {plan.data_root}{'' if free > disk_total else ': NOT ENOUGH'})",
        "",
        f"Estimates: {speed.gflop_s:.0f} GFLOP/s usable on this device (a dense matmul measured just now x "
        f"{speed.efficiency}), FLOPs per image counted for the {plan.config} config, {speed.decode_s * 1000:.0f} ms to "
        f"decode a 1024x1024 PNG here, pixel metrics at {speed.metric_s_per_pixel * 1e9:.0f} ns/pixel, downloads at "
        f"{BANDWIDTH_MB_S:.0f} MB/s. Expect +-2x; the real run prints progress bars with their own rates.",
    ]
    return "\n".join(lines)


def _existing_parent(path: Path) -> Path:
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return path


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# --- command line ----------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m model.training.reproduce`."""
    parser = argparse.ArgumentParser(
        prog="python -m model.training.reproduce",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="The downloads need internet; training and evaluating the paper config take hours on a GPU "
        "(see --dry-run) and days on a CPU.",
    )
    parser.add_argument(
        "--config",
        default="paper",
        choices=["paper", "edge", "tiny"],
        help="paper (as published, default), edge (smaller backbones), tiny (tests only)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan, disk and time estimates; do nothing")
    parser.add_argument(
        "--redo",
        nargs="+",
        choices=STAGE_NAMES,
        default=[],
        metavar="STAGE",
        help="forget these stages' stamps (and every later stage's) and run them again",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    parser.add_argument(
        "--data-root",
        type=Path,
        default=Path("data"),
        help="datasets go to DATA_ROOT/mvtec_ad and DATA_ROOT/visa (default: %(default)s)",
    )
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=Path("runs/reproduce"),
        help="feature caches, checkpoints, results, stamps (default: %(default)s)",
    )
    parser.add_argument("--weights-dir", type=Path, default=DEFAULT_WEIGHTS_DIR, help="default: %(default)s")
    parser.add_argument("--epochs", type=positive_int, default=25, help="training epochs (paper: 25)")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="training and prediction batch (paper: 8)")
    parser.add_argument("--shots", type=positive_int, nargs="+", default=[1, 2, 4], help="K to train and evaluate with")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="reference draws per K")
    parser.add_argument("--eval-size", type=positive_int, default=256, help="pixel metrics at this square size")
    parser.add_argument("--keep-archives", action="store_true", help="keep the dataset archives after extraction")
    for kind in SOURCES:
        parser.add_argument(f"--{kind}-url", help=f"download {TITLES[kind]} from this mirror instead")
        parser.add_argument(f"--{kind}-sha256", help=argparse.SUPPRESS)
    return parser  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run `python -m model.training.reproduce` (or print the plan with --dry-run); returns 0, or 2 with a one-line
    error when a stage fails."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    plan = Plan(
        config=args.config,
        device=args.device,
        data_root=args.data_root,
        run_dir=args.run_dir,
        weights_dir=args.weights_dir,
        epochs=args.epochs,
        batch_size=args.batch_size,
        shots=args.shots,
        seeds=args.seeds,
        eval_size=args.eval_size,
        urls={kind: getattr(args, f"{kind}_url") for kind in SOURCES},
        sha256s={kind: getattr(args, f"{kind}_sha256") for kind in SOURCES},
        keep_archives=args.keep_archives,
    )
    try:
        if args.dry_run:
            print(format_plan(plan, measure_speed(resolve_device(args.device))))
            return 0
        forget(plan, args.redo)
        run_all(plan)
    except (StageError, FetchError, DatasetError, WeightsMissingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
