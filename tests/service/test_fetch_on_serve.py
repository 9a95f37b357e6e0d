"""`--fetch-weights` (`make serve`): fetch missing backbone weights first; any failure is one line, then serve."""

from __future__ import annotations

import pytest

import model
import service.__main__ as entry
from tests.helpers.apps import tiny_settings


def edge_settings(tmp_path):
    return tiny_settings(tmp_path, model_config_name="edge", weights_dir=tmp_path / "weights")


def never_fetch(*_args, **_kwargs):
    raise AssertionError("nothing should be downloaded")


def test_configs_without_weight_files_fetch_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(model, "fetch_weights", never_fetch)
    entry.fetch_missing_weights(tiny_settings(tmp_path))
    assert capsys.readouterr().err == ""


def test_missing_weights_are_fetched_when_the_hub_answers(tmp_path, monkeypatch, capsys):
    fetched = []
    monkeypatch.setattr(entry, "hub_reachable", lambda: True)
    monkeypatch.setattr(model, "fetch_weights", lambda config, folder: fetched.append((config, folder)))
    entry.fetch_missing_weights(edge_settings(tmp_path))
    assert fetched == [("edge", tmp_path / "weights")]
    assert capsys.readouterr().err == ""


def test_unreachable_hub_is_one_line_and_no_download(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(entry, "hub_reachable", lambda: False)
    monkeypatch.setattr(model, "fetch_weights", never_fetch)
    entry.fetch_missing_weights(edge_settings(tmp_path))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: the edge weights are missing")
    assert "python -m model.weights fetch edge" in err


@pytest.mark.parametrize("error", [RuntimeError("Failed to download\nline two\nline three"), SystemExit("no")])
def test_a_failed_download_is_one_line(tmp_path, monkeypatch, capsys, error):
    def failing(*_args):
        raise error

    monkeypatch.setattr(entry, "hub_reachable", lambda: True)
    monkeypatch.setattr(model, "fetch_weights", failing)
    entry.fetch_missing_weights(edge_settings(tmp_path))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: fetching the edge weights failed")
