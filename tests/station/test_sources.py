"""The folder camera and the HTTP inspector on their own: what they take, what they send, how failures map."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from datetime import UTC, datetime

import httpx
import pytest

from station.camera import CameraTimeout, FolderCamera, Frame
from station.codes import ErrorCode
from station.inspector import TAG, HttpInspector, InspectFailed, Part
from station.opencv import CameraUnavailable, OpenCVCamera


def test_the_folder_camera_takes_each_new_file_once_oldest_first(tmp_path):
    (tmp_path / "before.png").write_bytes(b"old")
    camera = FolderCamera(tmp_path, settle_s=0)
    (tmp_path / "a.png").write_bytes(b"first")
    (tmp_path / "b.png.part").write_bytes(b"unfinished")
    (tmp_path / ".c.png").write_bytes(b"hidden")
    (tmp_path / "d.png").write_bytes(b"second")
    frames = [camera.acquire(1.0), camera.acquire(1.0)]
    assert [(frame.data, frame.filename) for frame in frames] == [(b"first", "a.png"), (b"second", "d.png")]
    with pytest.raises(CameraTimeout):
        camera.acquire(0.05)  # only the temporary, hidden and old files are left


def written_ago(path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


@pytest.mark.parametrize("age_s", [2.0, 30.0])
def test_a_frame_left_by_an_earlier_part_is_never_taken_by_the_next(tmp_path, caplog, age_s):
    """A part that ended in an error before its frame was taken leaves that frame: the next part gets its own."""
    camera = FolderCamera(tmp_path, settle_s=0)
    (tmp_path / "p6.png").write_bytes(b"part 6")
    written_ago(tmp_path / "p6.png", age_s)  # part 6's trigger failed (an unknown product index)
    (tmp_path / "p7.png").write_bytes(b"part 7")
    with caplog.at_level(logging.WARNING, logger="station.camera"):
        frame = camera.acquire(1.0)
    assert (frame.filename, frame.data) == ("p7.png", b"part 7")
    assert "p6.png was written" in caplog.text and (tmp_path / "p6.png").exists()
    with pytest.raises(CameraTimeout):
        camera.acquire(0.05)  # p6 is never given to a later part either


def test_a_frame_written_just_before_the_trigger_is_this_parts(tmp_path):
    """The camera may see the trigger before the station does: a file younger than stale_s is taken."""
    camera = FolderCamera(tmp_path, settle_s=0, stale_s=0.5)
    (tmp_path / "p1.png").write_bytes(b"part 1")
    written_ago(tmp_path / "p1.png", 0.2)
    assert camera.acquire(1.0).filename == "p1.png"


def test_the_folder_camera_times_out_without_a_new_file(tmp_path):
    (tmp_path / "before.png").write_bytes(b"old")
    camera = FolderCamera(tmp_path, settle_s=0, pattern="*.png")
    (tmp_path / "notes.txt").write_text("not matching the pattern")
    with pytest.raises(CameraTimeout, match="no new file"):
        camera.acquire(0.05)


def test_the_folder_camera_waits_until_the_size_settles_and_can_delete(tmp_path):
    now = [0.0]
    camera = FolderCamera(tmp_path, settle_s=1.0, delete_taken=True, clock=lambda: now[0])
    (tmp_path / "a.png").write_bytes(b"part")
    sizes: dict = {}
    assert camera.settled("a.png", sizes, 0.0) is None
    (tmp_path / "a.png").write_bytes(b"partial write")
    assert camera.settled("a.png", sizes, 0.5) is None
    assert camera.settled("a.png", sizes, 1.4) is None
    frame = camera.settled("a.png", sizes, 1.5)
    assert frame.data == b"partial write" and not (tmp_path / "a.png").exists()


def answering(status: int, body: object, seen: list | None = None) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return httpx.Response(status, json=body)

    return httpx.MockTransport(handle)


def result(**changes) -> dict:
    found = {
        "anomalous": True,
        "score": 2.5,
        "threshold": 1.0,
        "n_regions": 3,
        "inspection_id": "abc",
        "rule": "threshold",
        "timings_ms": {"decode": 1.5, "predict": 9.0},
    }
    return {"product_id": "bottle", "results": [{**found, **changes}]}


def test_the_inspector_sends_the_part_and_reads_the_verdict():
    seen: list[httpx.Request] = []
    inspector = HttpInspector("http://service", "key", "st3", "top", transport=answering(200, result(), seen))
    part = Part("bottle", "4711", datetime(2026, 12, 6, 22, 0, tzinfo=UTC))
    verdict = inspector.inspect(Frame(b"png", "top.png"), part, 1.0)
    assert (verdict.anomalous, verdict.score, verdict.n_regions, verdict.timings_ms["predict"]) == (True, 2.5, 3, 9.0)
    body = seen[0].read().decode("latin-1")
    for field, value in (
        ("product_id", "bottle"),
        ("part_id", "4711"),
        ("station", "st3"),
        ("camera", "top"),
        ("trigger_time", "2026-12-06T22:00:00+00:00"),
    ):
        assert f'name="{field}"\r\n\r\n{value}\r\n' in body
    assert seen[0].headers["authorization"] == "Bearer key"
    assert seen[0].url.params["outputs"] == "verdict"  # no PNG is encoded for a part


@pytest.mark.parametrize(
    "status, code",
    [
        (429, ErrorCode.SERVICE_BUSY),
        (503, ErrorCode.SERVICE_BUSY),
        (415, ErrorCode.FRAME_REJECTED),
        (422, ErrorCode.FRAME_REJECTED),
        (404, ErrorCode.CONFIGURATION),
        (403, ErrorCode.CONFIGURATION),
        (504, ErrorCode.SERVICE_TIMEOUT),
        (500, ErrorCode.SERVICE_ERROR),
    ],
)
def test_each_error_status_has_its_code(status, code):
    inspector = HttpInspector("http://service", None, "st3", "top", transport=answering(status, {"detail": "why"}))
    with pytest.raises(InspectFailed, match=f"HTTP {status}: why") as raised:
        inspector.inspect(Frame(b"png", "top.png"), Part("bottle"), 1.0)
    assert raised.value.code == code


@pytest.mark.parametrize(
    "failure, code",
    [
        (httpx.ConnectError("refused"), ErrorCode.SERVICE_UNREACHABLE),
        (httpx.ReadTimeout("slow"), ErrorCode.SERVICE_TIMEOUT),
        (httpx.RemoteProtocolError("dropped"), ErrorCode.SERVICE_UNREACHABLE),
    ],
)
def test_a_service_that_cannot_be_reached_is_an_error_with_its_code(failure, code):
    def fail(request):
        raise failure

    inspector = HttpInspector("http://service", None, "st3", "top", transport=httpx.MockTransport(fail))
    with pytest.raises(InspectFailed) as raised:
        inspector.inspect(Frame(b"png", "top.png"), Part("bottle"), 1.0)
    assert raised.value.code == code


@pytest.mark.parametrize("part_id", ["Prüfteil 7", " P-3", "P-3 ", "x" * 129, "line\tbreak"])
def test_a_part_id_the_service_would_refuse_is_a_configuration_error_before_any_request(part_id):
    """It was sent, refused with 422, and reported as ERROR 6 FRAME_REJECTED: the camera blamed for the PLC's id."""
    seen: list[httpx.Request] = []
    inspector = HttpInspector("http://service", None, "st3", "top", transport=answering(200, result(), seen))
    with pytest.raises(InspectFailed, match="is not 1-128 printable ASCII characters") as raised:
        inspector.inspect(Frame(b"png", "top.png"), Part("bottle", part_id), 1.0)
    assert raised.value.code == ErrorCode.CONFIGURATION and seen == []


def test_the_station_checks_part_ids_by_the_services_own_rule():
    from service.imaging.formats import TAG_TEXT  # the station cannot import the service; the test can

    assert TAG.pattern == TAG_TEXT


@pytest.mark.parametrize("part_id", ["P-1", "12345", "x" * 128, "SN 0042/7"])
def test_a_part_id_the_service_takes_is_sent(part_id):
    seen: list[httpx.Request] = []
    inspector = HttpInspector("http://service", None, "st3", "top", transport=answering(200, result(), seen))
    inspector.inspect(Frame(b"png", "top.png"), Part("bottle", part_id), 1.0)
    assert f'name="part_id"\r\n\r\n{part_id}\r\n' in seen[0].read().decode()


@pytest.mark.parametrize("mode", ["training-free (random weights)", "full (random weights)"])
def test_a_verdict_of_random_weights_is_a_configuration_error_unless_allowed(mode):
    """A service left on the tiny config (or DCPSFR_RANDOM_INIT) answered OK verdicts that mean nothing, and the
    line passed the parts."""
    inspector = HttpInspector("http://service", None, "st3", "top", transport=answering(200, result(mode=mode)))
    with pytest.raises(InspectFailed, match="the service runs random weights") as raised:
        inspector.inspect(Frame(b"png", "top.png"), Part("bottle"), 1.0)
    assert raised.value.code == ErrorCode.CONFIGURATION
    allowed = HttpInspector(
        "http://service", None, "st3", "top", transport=answering(200, result(mode=mode)), allow_random_weights=True
    )
    assert allowed.inspect(Frame(b"png", "top.png"), Part("bottle"), 1.0).score == 2.5


@pytest.mark.parametrize("mode", ["training-free", "full", None])
def test_a_verdict_of_real_weights_is_taken(mode):
    inspector = HttpInspector("http://service", None, "st3", "top", transport=answering(200, result(mode=mode)))
    assert inspector.inspect(Frame(b"png", "top.png"), Part("bottle"), 1.0).anomalous is True


@pytest.mark.parametrize(
    "body", [{"results": []}, {"results": [{"score": 1.0}]}, ["not", "an", "object"], {"results": ["x"]}]
)
def test_an_unreadable_answer_is_a_service_error(body):
    inspector = HttpInspector("http://service", None, "st3", "top", transport=answering(200, body))
    with pytest.raises(InspectFailed) as raised:
        inspector.inspect(Frame(b"png", "top.png"), Part("bottle"), 1.0)
    assert raised.value.code == ErrorCode.SERVICE_ERROR
    assert json.dumps(body)  # the body was JSON: only its shape is wrong


def test_the_opencv_camera_gives_each_trigger_the_next_frame_as_png(tmp_path):
    cv2 = pytest.importorskip("cv2", reason="OpenCV (opencv-python-headless) not installed")
    import numpy as np

    from station.opencv import OpenCVCamera

    video = tmp_path / "line.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (64, 48))
    for shade in (0, 200):
        writer.write(np.full((48, 64, 3), shade, dtype=np.uint8))  # (H, W, 3) BGR
    writer.release()
    camera = OpenCVCamera(str(video), name="top")
    try:
        frames = [camera.acquire(10.0) for _ in range(3)]  # the third read finds the end: the stream is reopened
    finally:
        camera.close()
    assert all(frame.data.startswith(b"\x89PNG") and frame.filename == "top.png" for frame in frames)
    shades = [int(cv2.imdecode(np.frombuffer(f.data, np.uint8), cv2.IMREAD_GRAYSCALE).mean()) for f in frames]
    assert shades[0] < 50 < shades[1] and shades[2] < 50


def test_an_opencv_camera_that_cannot_open_is_a_camera_failure(tmp_path):
    pytest.importorskip("cv2", reason="OpenCV (opencv-python-headless) not installed")
    from station.camera import CameraFailed
    from station.opencv import OpenCVCamera

    with pytest.raises(CameraFailed, match="cannot open camera"):
        OpenCVCamera(str(tmp_path / "no-such-stream.avi"))


def test_the_opencv_camera_without_opencv_names_the_package_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 -> ImportError
    with pytest.raises(CameraUnavailable) as missing:
        OpenCVCamera("rtsp://10.0.3.21/stream1", "top")
    assert "pip install opencv-python-headless" in str(missing.value)
    assert "[camera]'" not in str(missing.value)  # the extra is empty: installing it adds nothing
