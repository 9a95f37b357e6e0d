"""The benchmark's plumbing (not its numbers): argument parsing, targets, and the GPU script's CPU fallback."""

from __future__ import annotations

import json

import pytest

from bench.__main__ import SECTIONS, parse_args
from bench.common import Target, interleaved
from bench.gpu import main as gpu_main


def test_only_and_quick_select_sections_and_repeats():
    args = parse_args(["--only", "http", "bank", "--quick", "--runtimes", "openvino"])
    assert args.only == ["http", "bank"]
    assert args.repeats == 2
    assert args.runtimes == ["torch", "openvino"]  # torch is always the baseline
    assert parse_args([]).repeats == 5
    with pytest.raises(SystemExit):
        parse_args(["--only", "everything"])
    assert set(SECTIONS) >= {"stages", "runtime", "http", "throughput", "fit", "memory", "bank"}


def test_target_is_met_only_within_its_limit():
    assert Target("overhead", 1.05, 1.10).met
    assert not Target("overhead", 1.2, 1.10).met
    assert "MISSED" in Target("disk", 40.0, 32.0, "MB").line()


def test_interleaved_runs_candidates_in_turns():
    calls = []
    times = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1)
    assert calls == ["a", "b"] * 4
    assert {name: len(values) for name, values in times.items()} == {"a": 3, "b": 3}


def test_gpu_script_cpu_fallback_writes_its_json(tmp_path):
    out = tmp_path / "gpu.json"
    assert gpu_main(["--json", str(out), "--image-size", "64", "64"]) == 0
    report = json.loads(out.read_text())
    (run,) = report["runs"]
    assert run["config"] == "tiny" and run["compile"] == "off"
    assert run["batch1_p50_ms"] > 0 and run["batch1_p99_ms"] >= run["batch1_p50_ms"]
    assert set(run["batch1_stages_ms"]) >= {"dino", "bank_search", "heads", "postprocess"}
    assert run["throughput"]["2"] > 0
