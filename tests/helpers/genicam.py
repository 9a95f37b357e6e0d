"""Aravis's fake GigE Vision camera (`arv-fake-gv-camera-0.8`, Debian aravis-tools) on loopback, for the tests.

It answers on 127.0.0.1's GigE Vision port (UDP 3956), so one runs at a time on a machine: a file lock keeps test
processes (xdist workers, other checkouts) from starting a second one that the first would shadow."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest

from station.genicam import AravisMissing, load_aravis
from tests.helpers.processes import Process, start_process
from tests.helpers.waiting import wait_for

FAKE_CAMERA = "arv-fake-gv-camera-0.8"
LOCK = Path(tempfile.gettempdir()) / "dcpsfr-fake-gv-camera.lock"


def aravis_or_skip() -> ModuleType:
    """The Aravis module; skips the calling test module, saying why, when Aravis or the fake camera is missing."""
    try:
        aravis = load_aravis()
    except AravisMissing as err:
        pytest.skip(f"Aravis is not installed ({err}); .ci/run installs it", allow_module_level=True)
    if shutil.which(FAKE_CAMERA) is None:
        pytest.skip(
            f"{FAKE_CAMERA} is not installed (Debian aravis-tools; .ci/run installs it)", allow_module_level=True
        )
    return aravis


def start_fake_camera(serial: str, log_dir: Path) -> Process:
    """The fake camera with this serial number, once discovery sees it (the caller holds `camera_lock`)."""
    aravis = load_aravis()
    command = [FAKE_CAMERA, "-i", "127.0.0.1", "-s", serial]
    process = start_process(command, dict(os.environ), log_dir / f"fake-{serial}.log")

    def seen() -> bool:
        assert process.alive(), process.log_tail()
        aravis.update_device_list()
        return any(aravis.get_device_serial_nbr(i) == serial for i in range(aravis.get_n_devices()))

    wait_for(seen, f"the fake camera {serial} to answer discovery", timeout_s=30)
    return process


@contextmanager
def camera_lock() -> Iterator[None]:
    """Held while a fake camera of this process runs."""
    with LOCK.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def fake_camera(log_dir: Path) -> Iterator[tuple[str, list[Process]]]:
    """(serial, [its process]) of a fresh fake camera; the list holds its restarts too; all killed at the end."""
    serial = f"T{uuid.uuid4().hex[:7]}"
    with camera_lock():
        processes = [start_fake_camera(serial, log_dir)]
        try:
            yield serial, processes
        finally:
            for process in processes:
                process.stop(signal.SIGKILL, timeout_s=10)
