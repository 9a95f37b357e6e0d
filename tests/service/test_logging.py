"""Logging as `python -m service` configures it: third-party noise stays out of the start's log."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CREATE_APP = """
import logging
from service.__main__ import configure_logging, load_settings
configure_logging({level!r})
from service.app import create_app
create_app(load_settings())
import faiss  # loaded by the app's stack: its loader logged then, if at all
logging.getLogger("service").info("app created")
"""


@pytest.mark.parametrize("level", ["info", "debug"])
def test_creating_the_app_logs_no_faiss_loader_lines(tmp_path, level):
    env = {"PATH": "/usr/bin:/bin", "DCPSFR_MODEL_CONFIG": "tiny", "DCPSFR_DATA_DIR": str(tmp_path)}
    env.update({k: v for k, v in os.environ.items() if k in ("PYTHONPATH", "HOME", "OMP_NUM_THREADS")})
    done = subprocess.run(
        [sys.executable, "-c", CREATE_APP.format(level=level)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "INFO service: app created" in done.stderr  # logging works at this level
    assert "faiss.loader" not in done.stderr and "swigfaiss_avx2" not in done.stderr, done.stderr
