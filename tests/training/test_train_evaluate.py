"""Training and evaluation end to end on a synthetic dataset made in the test (tiny config, a few steps)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model import create_detector
from model.training.data.datasets import open_dataset
from model.training.data.synth import write_synthetic_dataset
from model.training.evaluate import METRICS, evaluate, format_markdown
from model.training.evaluate import main as evaluate_main
from model.training.train import TrainOptions, synthetic_rng, train


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic_dataset(
        root, ["woven", "grid"], n_train=4, n_test_good=3, n_test_bad=3, size=96, seed=0, progress=False
    )
    return root


@pytest.fixture(scope="module")
def trained(synthetic_root, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    opts = TrainOptions(
        config="tiny",
        data=f"mvtec:{synthetic_root}",
        shots=[1, 2],
        epochs=12,
        batch_size=6,
        lr_heads=3e-3,
        run_dir=run,
        out=run / "heads" / "tiny.safetensors",
        device="cpu",
    )
    return train(opts), run


def losses(run) -> list[float]:
    return [json.loads(line)["total"] for line in (run / "log.jsonl").read_text().splitlines()]


def test_training_loss_goes_down(trained):
    _, run = trained
    totals = losses(run)
    assert len(totals) >= 24
    assert np.mean(totals[-6:]) < np.mean(totals[:6])


def test_heads_file_and_sidecar(trained):
    path, run = trained
    info = json.loads(path.with_suffix(".json").read_text())
    assert info["config"] == "tiny" and info["epochs"] == 12 and info["data"].startswith("mvtec:")
    assert {"git_commit", "date", "steps"} <= set(info)
    assert (run / "checkpoint.pt").is_file()
    assert create_detector("tiny", device="cpu", heads_file=path).mode == "full"


def test_resume_continues_from_the_checkpoint(synthetic_root, tmp_path):
    common = dict(config="tiny", data=f"mvtec:{synthetic_root}", shots=[1], epochs=3, batch_size=6, device="cpu")
    train(TrainOptions(**common, run_dir=tmp_path, out=tmp_path / "h.safetensors", max_steps=2))
    first = len(losses(tmp_path))
    train(TrainOptions(**common, run_dir=tmp_path, out=tmp_path / "h.safetensors", resume=True))
    steps = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert first == 2 and steps == list(range(1, len(steps) + 1))  # resumed, not restarted
    assert len(steps) > first


def test_training_on_synthetic_anomalies_of_normal_images(synthetic_root, tmp_path):
    opts = TrainOptions(
        config="tiny",
        data=f"mvtec:{synthetic_root}",
        categories=["woven"],
        synthetic=True,
        synthetic_per_image=2,
        shots=[1],
        epochs=1,
        batch_size=4,
        run_dir=tmp_path,
        out=tmp_path / "h.safetensors",
        device="cpu",
    )
    train(opts)
    masks = sorted((tmp_path / "synthetic" / "woven").glob("*_mask.png"))
    assert len(masks) == 4 * 2
    assert (tmp_path / "h.safetensors").is_file()


def test_evaluate_full_mode_table_shape_and_ranges(trained, synthetic_root):
    path, _ = trained
    detector = create_detector("tiny", device="cpu", heads_file=path)
    dataset = open_dataset(f"mvtec:{synthetic_root}")
    result = evaluate(detector, dataset, shots=[1, 2], seeds=[0, 1], eval_size=64, batch_size=4)
    assert len(result.runs) == 2 * 2 * 2
    for shots in (1, 2):
        table = result.table(shots)
        assert list(table) == ["grid", "woven", "mean"] or list(table) == ["woven", "grid", "mean"]
        for row in table.values():
            assert set(row) == set(METRICS)
            assert all(0.0 <= v <= 1.0 for v in row.values())
        assert result.images_per_second(shots) > 0
    markdown = format_markdown(result, [1, 2])
    assert "RANDOM WEIGHTS" in markdown and "## 1-shot" in markdown and "| **mean** |" in markdown


def test_evaluate_cli_writes_markdown_json_and_panels(synthetic_root, tmp_path, capsys):
    code = evaluate_main(
        [
            "--config", "tiny", "--data", f"mvtec:{synthetic_root}", "--categories", "woven",
            "--shots", "1", "--seeds", "0", "--eval-size", "64", "--device", "cpu",
            "--out", str(tmp_path / "out"), "--save-maps", str(tmp_path / "maps"),
        ]
    )  # fmt: skip
    assert code == 0
    payload = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(payload["tables"]["1"]) == {"woven", "mean"}
    assert (tmp_path / "out" / "results.md").read_text().startswith("# Evaluation")
    panels = list((tmp_path / "maps" / "1shot" / "woven").glob("*.png"))
    assert len(panels) == 3 + 3 * 2  # every test image


def test_evaluate_cli_clear_error_for_a_wrong_path(tmp_path, capsys):
    code = evaluate_main(["--config", "tiny", "--data", f"mvtec:{tmp_path / 'nope'}", "--device", "cpu"])
    assert code == 2
    assert "error:" in capsys.readouterr().err


def test_synthetic_anomaly_seeds_differ_per_category():
    draws = {c: synthetic_rng(0, c, 3, 1).random() for c in ("bottle", "carpet", "screw")}  # same name lengths
    assert len(set(draws.values())) == 3
    assert synthetic_rng(0, "bottle", 3, 1).random() == draws["bottle"]  # and stay reproducible
    assert np.isfinite(list(draws.values())).all()
