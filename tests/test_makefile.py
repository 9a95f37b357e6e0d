"""`make help` lists the Makefile's targets, one line each."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make")


def make(*args: str) -> str:
    return subprocess.run(["make", "-s", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout


def phony_targets() -> list[str]:
    (line,) = re.findall(r"^\.PHONY:(.*)$", (REPO / "Makefile").read_text(), flags=re.MULTILINE)
    return line.split()


def test_make_help_lists_every_target_once_with_one_line():
    listed = [line.split(None, 1) for line in make("help").splitlines()]
    targets = [target for target, _ in listed]
    assert len(targets) == len(set(targets))
    assert sorted(targets) == sorted(phony_targets())
    assert all(len(what.strip()) > 10 for _, what in listed)


def test_make_help_runs_nothing_but_the_listing():
    planned = make("-n", "help")
    assert "pip install" not in planned and "pytest" not in planned
    assert planned.count("\n") == 1  # the one listing command
