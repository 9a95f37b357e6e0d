"""The camera client's retry, journal and output logic against a scripted fake service (httpx.MockTransport),
and its OpenCV capture against a real video file."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from PIL import Image

from service.client import cli
from service.client.api import ConfigurationError, FrameError, InspectApi, RetriesExhausted, RetryPolicy, Stopped
from service.client.camera import OPENCV_MISSING, CameraSpooler, CameraUnavailable
from service.client.journal import Journal
from service.client.outputs import OutputFolder
from service.client.watch import FolderScanner, FrameSender, watch_folder

FAST = RetryPolicy(initial_s=0.001, max_s=0.01)
MASK = b"mask-png-bytes"


def png(width: int = 8, height: int = 6, shade: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (shade, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


class FakeService:
    """Answers POST /inspect like the service; `script` gives status codes (or exceptions) for the first calls."""

    def __init__(self, script: list[int | BaseException] | None = None, headers: dict[str, str] | None = None) -> None:
        self.script = list(script or [])
        self.headers = headers or {}
        self.requests: list[httpx.Request] = []
        self.sent_files: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.script.pop(0) if self.script else 200
        if isinstance(step, BaseException):
            raise step
        if step != 200:
            return httpx.Response(step, json={"detail": f"scripted {step}"}, headers=self.headers)
        names = re.findall(rb'filename="([^"]+)"', request.read())
        self.sent_files += [name.decode() for name in names]
        results = [
            {
                "filename": name.decode(),
                "score": 0.25,
                "anomalous": False,
                "threshold": 0.5,
                "mask_png": base64.b64encode(MASK).decode(),
                "anomaly_map_png": base64.b64encode(b"map").decode(),
                "mode": "training-free",
            }
            for name in names
        ]
        return httpx.Response(200, json={"product_id": "p1", "reference_version": 3, "results": results})


def api_for(fake: FakeService, retry: RetryPolicy = FAST, **kwargs) -> InspectApi:
    return InspectApi("http://service", retry=retry, transport=httpx.MockTransport(fake), **kwargs)


# --- retries -------------------------------------------------------------------------------------------------


def test_busy_and_down_service_is_retried_until_it_answers():
    fake = FakeService([429, httpx.ConnectError("refused"), 503, httpx.ReadTimeout("slow"), 502])
    answer = api_for(fake).inspect("p1", [("a.png", png())])
    assert answer["results"][0]["filename"] == "a.png"
    assert len(fake.requests) == 6


@pytest.mark.parametrize("status", [400, 413, 415, 422])
def test_a_bad_image_is_not_retried(status: int):
    fake = FakeService([status])
    with pytest.raises(FrameError, match=f"HTTP {status}: scripted {status}"):
        api_for(fake).inspect("p1", [("a.png", png())])
    assert len(fake.requests) == 1


@pytest.mark.parametrize("status", [401, 403, 404])
def test_misconfiguration_is_not_retried(status: int):
    fake = FakeService([status])
    with pytest.raises(ConfigurationError) as raised:
        api_for(fake).inspect("p1", [("a.png", png())])
    assert raised.value.status == status and len(fake.requests) == 1


def test_server_errors_are_retried_a_few_times_then_blamed_on_the_frame():
    fake = FakeService([500, 500, 500, 500])
    with pytest.raises(FrameError, match="HTTP 500"):
        api_for(fake, RetryPolicy(initial_s=0.001, max_s=0.01, server_error_attempts=3)).inspect("p1", [("a", b"")])
    assert len(fake.requests) == 3


def test_max_attempts_bounds_the_retries():
    fake = FakeService([503] * 10)
    with pytest.raises(RetriesExhausted, match="gave up after 4 attempts"):
        api_for(fake, RetryPolicy(initial_s=0.001, max_s=0.01, max_attempts=4)).inspect("p1", [("a", b"")])
    assert len(fake.requests) == 4


def test_stop_interrupts_the_backoff():
    stop = threading.Event()
    stop.set()
    fake = FakeService([503], headers={"Retry-After": "3600"})
    with pytest.raises(Stopped):
        api_for(fake, RetryPolicy(max_s=3600), stop=stop).inspect("p1", [("a", b"")])


def test_backoff_grows_with_jitter_and_honours_retry_after():
    policy = RetryPolicy(initial_s=1.0, max_s=8.0, factor=2.0)
    for attempt, ceiling in ((0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (10, 8.0)):
        delays = {policy.delay(attempt) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays) and len(delays) > 1
    assert policy.delay(0, retry_after_s=5.0) == 5.0
    assert policy.delay(0, retry_after_s=600.0) == 8.0


def test_api_key_is_sent_as_bearer_and_files_as_multipart():
    fake = FakeService()
    api_for(fake, api_key="k-123").inspect("p1", [("a.png", png()), ("b.jpg", b"jpeg")])
    request = fake.requests[0]
    assert request.headers["authorization"] == "Bearer k-123"
    body = request.read()
    assert b'name="product_id"' in body and b"Content-Type: image/jpeg" in body
    assert fake.sent_files == ["a.png", "b.jpg"]


# --- watch: once per frame, across restarts ----------------------------------------------------------------


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    frames, out = tmp_path / "frames", tmp_path / "out"
    frames.mkdir()
    return frames, out


def add_frames(folder: Path, count: int, start: int = 0) -> list[Path]:
    paths = []
    for i in range(start, start + count):
        path = folder / f"frame{i:03d}.png"
        path.write_bytes(png(shade=i))
        os.utime(path, ns=(10**18 + i, 10**18 + i))  # distinct mtimes, in order
        paths.append(path)
    return paths


def run_watch(fake: FakeService, frames: Path, out: Path, **kwargs) -> dict[str, int]:
    """One client run (fresh objects, as after a restart) over what is in `frames` now."""
    journal = Journal(out / "journal.sqlite3")
    try:
        sender = FrameSender(api_for(fake), "p1", OutputFolder(out), journal)
        return watch_folder(sender, frames, threading.Event(), poll_s=0.01, once=True, **kwargs)
    finally:
        journal.close()


def result_files(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("*.json"))


def test_every_frame_is_sent_once_with_its_result_and_mask(folders):
    frames, out = folders
    add_frames(frames, 3)
    (frames / "notes.txt").write_text("not an image")
    (frames / ".frame999.png.tmp").write_bytes(png())  # an atomic writer's temporary file
    fake = FakeService()
    assert run_watch(fake, frames, out) == {"done": 3}
    assert fake.sent_files == ["frame000.png", "frame001.png", "frame002.png"]
    assert result_files(out) == ["frame000.json", "frame001.json", "frame002.json"]
    record = json.loads((out / "frame001.json").read_text())
    assert record["result"]["score"] == 0.25 and "mask_png" not in record["result"]
    assert record["source"]["key"].startswith("frame001.png|")
    assert (out / record["mask_png"]).read_bytes() == MASK
    assert not list(out.glob("*.map.png")), "heat maps are only saved with save_map"

    assert run_watch(fake, frames, out) == {}, "a restarted client sent finished frames again"
    add_frames(frames, 1, start=3)
    assert run_watch(fake, frames, out) == {"done": 1}
    assert fake.sent_files[-1] == "frame003.png" and len(fake.sent_files) == 4


def test_a_frame_is_sent_only_once_it_stops_changing(folders):
    frames, _ = folders
    scanner = FolderScanner(frames)
    [path] = add_frames(frames, 1)
    assert scanner.settled_frames() == [] and scanner.unsettled == 1
    path.write_bytes(png(width=9))  # still being written
    assert scanner.settled_frames() == []
    [frame] = scanner.settled_frames()
    assert frame.path == path and scanner.unsettled == 0


def failing_once(original: Callable, error: Exception) -> Callable:
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise error
        return original(*args, **kwargs)

    return wrapper


def test_crash_after_the_result_is_written_does_not_resend(folders, monkeypatch):
    frames, out = folders
    add_frames(frames, 2)
    fake = FakeService()
    monkeypatch.setattr(Journal, "record", failing_once(Journal.record, KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):  # the client dies between writing frame000.json and journaling it
        run_watch(fake, frames, out)
    assert fake.sent_files == ["frame000.png"] and result_files(out) == ["frame000.json"]
    assert run_watch(fake, frames, out) == {"recovered": 1, "done": 1}
    assert fake.sent_files == ["frame000.png", "frame001.png"], "frame000 was sent twice"
    journal = Journal(out / "journal.sqlite3")
    assert journal.counts() == {"done": 2}
    journal.close()


def test_crash_while_the_request_is_in_flight_sends_it_again(folders):
    frames, out = folders
    add_frames(frames, 1)
    fake = FakeService([KeyboardInterrupt()])  # the client dies before any answer arrives
    with pytest.raises(KeyboardInterrupt):
        run_watch(fake, frames, out)
    assert result_files(out) == []
    assert run_watch(fake, frames, out) == {"done": 1}
    assert result_files(out) == ["frame000.json"]


def test_a_rejected_frame_is_recorded_and_not_sent_again(folders):
    frames, out = folders
    add_frames(frames, 2)
    fake = FakeService([415])
    assert run_watch(fake, frames, out) == {"rejected": 1, "done": 1}
    error = json.loads((out / "frame000.error.json").read_text())
    assert error["status"] == 415 and "scripted 415" in error["error"]
    assert run_watch(fake, frames, out) == {}
    assert len(fake.requests) == 2


def test_a_reused_file_name_keeps_both_results(folders):
    frames, out = folders
    [path] = add_frames(frames, 1)
    fake = FakeService()
    run_watch(fake, frames, out)
    path.write_bytes(png(width=20))  # the camera reuses the name for a new frame
    os.utime(path, ns=(2 * 10**18, 2 * 10**18))
    assert run_watch(fake, frames, out) == {"done": 1}
    [renamed] = set(result_files(out)) - {"frame000.json"}
    assert re.fullmatch(r"frame000-[0-9a-f]{10}\.json", renamed)
    assert json.loads((out / renamed).read_text())["source"]["size"] == path.stat().st_size


def test_delete_sent_removes_only_finished_images(folders):
    frames, out = folders
    add_frames(frames, 2)
    fake = FakeService([httpx.ConnectError("down")])
    run_watch(fake, frames, out, delete_sent=True)
    assert list(frames.iterdir()) == [] and len(result_files(out)) == 2


# --- camera --------------------------------------------------------------------------------------------------


def test_camera_without_opencv_says_how_to_install_it(monkeypatch, tmp_path: Path, capsys):
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 -> ImportError
    with pytest.raises(CameraUnavailable, match=re.escape(OPENCV_MISSING)):
        CameraSpooler("0", tmp_path, threading.Event())
    monkeypatch.setattr(cli, "stop_on_signals", lambda stop: None)
    argv = ["--url", "http://127.0.0.1:9", "watch", str(tmp_path / "in"), "--product", "p", "--out", str(tmp_path)]
    assert cli.main([*argv, "--camera", "0"]) == 2
    assert "pip install 'dcpsfr-inspect[camera]'" in capsys.readouterr().err


def test_camera_frames_from_a_video_are_spooled_and_sent(folders, tmp_path: Path):
    cv2 = pytest.importorskip("cv2", reason="OpenCV not installed (the `camera` extra)")
    import numpy as np

    video = tmp_path / "line.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (64, 48))
    for i in range(4):
        writer.write(np.full((48, 64, 3), 40 * i, dtype=np.uint8))  # (H, W, 3) BGR
    writer.release()
    frames, out = folders
    spooler = CameraSpooler(str(video), frames, threading.Event(), fps=0)
    spooler.run()  # a video file ends the capture
    spooled = sorted(frames.iterdir())
    assert spooler.error is None and len(spooled) == 4
    assert all(Image.open(path).size == (64, 48) for path in spooled)
    fake = FakeService()
    assert run_watch(fake, frames, out) == {"done": 4}
    assert fake.sent_files == [path.name for path in spooled]


def test_unopenable_camera_is_a_clear_error(tmp_path: Path):
    pytest.importorskip("cv2", reason="OpenCV not installed (the `camera` extra)")
    with pytest.raises(CameraUnavailable, match="cannot open camera"):
        CameraSpooler(str(tmp_path / "no-such-stream.avi"), tmp_path, threading.Event())
