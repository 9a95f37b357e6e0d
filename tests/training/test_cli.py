"""The training and evaluation commands refuse unusable arguments in one line (exit 2), never with a traceback."""

from __future__ import annotations

import pytest

from model.training.__main__ import main as training_main
from model.training.evaluate import main as evaluate_main
from model.training.reproduce import build_parser as reproduce_parser
from model.training.train import main as train_main
from model.training.train import parse_args as train_args

DATA = ["--data", "mvtec:/nonexistent"]


@pytest.mark.parametrize(
    "argv",
    [
        ["--epochs", "0"],  # would train nothing and still write a heads file
        ["--epochs", "-1"],
        ["--batch-size", "0"],
        ["--shots", "1", "0"],
        ["--reference-pool", "0"],
        ["--synthetic-per-image", "-2"],
        ["--max-steps", "0"],
    ],
)
def test_train_refuses_counts_below_one(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_args([*DATA, *argv])
    assert exit_info.value.code == 2
    assert "at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--shots", "0"], ["--batch-size", "0"], ["--eval-size", "-5"]])
def test_evaluate_refuses_counts_below_one(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate_main([*DATA, *argv])
    assert exit_info.value.code == 2
    assert "at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("command", [train_main, evaluate_main])
def test_an_unknown_config_is_one_line_and_exit_2(command, tmp_path, capsys):
    """`--config nope` is one line and exit 2, not a ConfigError traceback."""
    code = command(["--config", "nope", "--data", f"mvtec:{tmp_path}", "--weights-dir", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown config 'nope'" in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [["--epochs", "0"], ["--batch-size", "-1"], ["--shots", "0"], ["--eval-size", "0"]])
def test_reproduce_refuses_counts_below_one(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        reproduce_parser().parse_args(["--dry-run", *argv])
    assert exit_info.value.code == 2
    assert "at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["--help"], ["-h"]])
def test_the_package_lists_its_commands(argv, capsys):
    """`python -m model.training` was "No module named model.training.__main__"."""
    assert training_main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m model.training COMMAND")
    assert all(f"  {command} " in out for command in ("train", "evaluate", "reproduce", "data"))


def test_the_package_refuses_an_unknown_command_in_one_line(capsys):
    assert training_main(["fit"]) == 2
    assert capsys.readouterr().err.rstrip().splitlines()[-1] == (
        "error: unknown command 'fit': choose one of train, evaluate, reproduce, data"
    )


def test_the_package_runs_a_command_with_the_rest_of_the_arguments(capsys):
    with pytest.raises(SystemExit) as exit_info:
        training_main(["train", *DATA, "--epochs", "0"])  # train's own parser answers
    assert exit_info.value.code == 2
    assert "at least 1" in capsys.readouterr().err
    assert training_main(["data", "info", "mvtec:../shared/data/mvtec_ad"]) == 0
    assert "bottle_xs: train 5" in capsys.readouterr().out
