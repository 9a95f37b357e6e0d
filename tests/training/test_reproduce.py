"""`python -m model.reproduce` end to end on the tiny config against a loopback server (no internet, no weights)."""

from __future__ import annotations

import json

import pytest

from model import create_detector
from model.files import sha256_of
from model.training.reproduce import STAGE_NAMES, main
from model.weights import checksum_path
from tests.helpers.loopback import closed_port_url, loopback_server, mvtec_archive, sha256, visa_archive


def test_dry_run_prints_every_stage_with_disk_time_and_basis(tmp_path, capsys):
    code = main(["--config", "tiny", "--dry-run", "--data-root", str(tmp_path / "data"),
                 "--run-dir", str(tmp_path / "run"), "--device", "cpu"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    for stage in STAGE_NAMES:
        assert stage in lines and " todo " in lines[stage] and " GB " in lines[stage]
    assert "GB free at" in lines["total"]
    assert "GFLOP/s" in out and "decode" in out and "MB/s" in out  # the basis of the estimates is printed
    assert not (tmp_path / "data").exists() and not (tmp_path / "run").exists()  # a dry run does nothing


def test_offline_run_says_one_line_and_exits_non_zero(tmp_path, capsys):
    code = main(["--config", "tiny", "--data-root", str(tmp_path / "data"), "--run-dir", str(tmp_path / "run"),
                 "--weights-dir", str(tmp_path / "weights"), "--mvtec-url", closed_port_url()])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: cannot reach 127.0.0.1") and err.count("\n") == 1
    assert (tmp_path / "run" / "stamps" / "weights.json").is_file()  # tiny needs no weights: satisfied offline
    assert not (tmp_path / "run" / "stamps" / "mvtec.json").exists()


@pytest.mark.e2e
def test_the_whole_pipeline_on_tiny_then_a_rerun_skips_everything(tmp_path, capsys):
    mvtec, visa = mvtec_archive(), visa_archive()
    with loopback_server() as server:
        argv = [
            "--config", "tiny", "--device", "cpu", "--epochs", "1", "--batch-size", "4", "--eval-size", "64",
            "--seeds", "0",
            "--data-root", str(tmp_path / "data"), "--run-dir", str(tmp_path / "run"),
            "--weights-dir", str(tmp_path / "weights"),
            "--mvtec-url", server.serve("mvtec_anomaly_detection.tar.xz", mvtec), "--mvtec-sha256", sha256(mvtec),
            "--visa-url", server.serve("VisA_20220922.tar", visa), "--visa-sha256", sha256(visa),
        ]  # fmt: skip
        assert main(argv) == 0
        requests = len(server.requests)
        assert requests == 2

        run = tmp_path / "run"
        assert sorted(p.stem for p in (run / "stamps").glob("*.json")) == sorted(STAGE_NAMES)
        report = (run / "results.md").read_text()
        assert "RANDOM WEIGHTS" in report
        assert "## VisA (heads trained on MVTec AD)" in report and "## MVTec AD (heads trained on VisA)" in report
        for k in (1, 2, 4):
            assert report.count(f"| {k} | ours (full) |") == 2
        assert "| 1 | DCP-SFR paper | 97.3 |" in report and "| 1 | AnomalyDINO | 87.4 |" in report
        evaluated = json.loads((run / "eval-visa" / "results.json").read_text())
        assert len(evaluated["runs"]) == 3 * 1 * 2  # K x seeds x categories
        assert {r["category"] for r in evaluated["runs"]} == {"candle", "pcb1"}

        heads = tmp_path / "weights" / "heads"
        for name in ("tiny.safetensors", "tiny-from-mvtec.safetensors", "tiny-from-visa.safetensors"):
            assert checksum_path(heads / name).read_text().split()[0] == sha256_of(heads / name)
            sidecar = json.loads((heads / name).with_suffix(".json").read_text())
            assert sidecar["config"] == "tiny" and set(sidecar["reproduce"]["mean_percent"]) == {"1", "2", "4"}
        default = json.loads((heads / "tiny.json").read_text())["reproduce"]
        assert default["trained_on"].startswith("mvtec:") and default["evaluated_on"].startswith("visa:")
        assert create_detector("tiny", weights_dir=tmp_path / "weights", device="cpu").mode == "full"

        capsys.readouterr()
        eval_stamp = (run / "stamps" / "eval-visa.json").read_text()
        assert main(argv) == 0  # everything stamped: nothing runs, nothing is downloaded
        assert capsys.readouterr().out.count("skipped") == len(STAGE_NAMES)
        assert len(server.requests) == requests

        assert main([*argv, "--dry-run"]) == 0
        plan = capsys.readouterr().out
        assert all(f"{stage:12} done" in plan for stage in STAGE_NAMES) and "0.0 GB       0 s" in plan

        assert main([*argv, "--redo", "report"]) == 0  # report and install again, evaluation untouched
        assert (run / "stamps" / "eval-visa.json").read_text() == eval_stamp
        assert len(server.requests) == requests
