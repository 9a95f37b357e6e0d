"""The benchmark's plumbing (not its numbers): argument parsing, targets, and the GPU script's CPU fallback."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.__main__ import SECTIONS, parse_args
from bench.__main__ import main as bench_main
from bench.common import Target, interleaved
from bench.gpu import main as gpu_main
from bench.runtime import map_correlation, separating_threshold


def test_only_and_quick_select_sections_and_repeats():
    args = parse_args(["--only", "http", "bank", "--quick", "--runtimes", "openvino"])
    assert args.only == ["http", "bank"]
    assert args.repeats == 2
    assert args.runtimes == ["torch", "openvino"]  # torch is always the baseline
    assert parse_args([]).repeats == 5
    with pytest.raises(SystemExit):
        parse_args(["--only", "everything"])
    assert set(SECTIONS) >= {"stages", "runtime", "http", "throughput", "fit", "memory", "bank"}


@pytest.mark.parametrize(
    ("config", "message"),
    [("nonexistent", "unknown config 'nonexistent'"), ("{tmp}/missing.json", "config file not found")],
)
def test_an_unusable_config_is_one_line_not_a_traceback(tmp_path, capsys, config, message):
    argv = ["--only", "fit", "--quick", "--config", config.format(tmp=tmp_path), "--json", str(tmp_path / "b.json")]
    assert bench_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: bench fit: ") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "b.json").exists()


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


@pytest.mark.parametrize(
    ("scores", "labels", "threshold"),
    [
        ([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], 0.5),  # separable: the middle of the gap between good and defective
        ([-3.0, 2.0, -1.0, 4.0], [0, 1, 0, 1], 0.5),  # unsorted logits
        ([0.1, 0.3, 0.2, 0.9], [0, 0, 1, 1], 0.6),  # overlap: best accuracy (3/4), then the widest gap
    ],
)
def test_separating_threshold_is_the_best_fp32_split(scores, labels, threshold):
    assert separating_threshold(scores, labels) == pytest.approx(threshold)


def test_map_correlation_of_anomaly_maps():
    ramp = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert map_correlation(ramp, 2 * ramp + 1) == pytest.approx(1.0)
    assert map_correlation(ramp, -ramp) == pytest.approx(-1.0)
    assert map_correlation(np.ones((3, 4)), np.ones((3, 4))) == 1.0


def test_runtime_section_compares_low_precision_runtimes_by_default():
    args = parse_args(["--only", "runtime"])
    assert "openvino-int8" in args.runtimes and args.runtimes[0] == "torch"
    assert args.parity_data is None  # the section's default: the bottle images under ../shared/data
