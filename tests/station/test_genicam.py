"""The GenICam source against Aravis's fake GigE Vision camera (`arv-fake-gv-camera-0.8`, Debian aravis-tools): a
real GVCP/GVSP device on loopback, started and killed by the tests. Skipped, saying why, without Aravis."""

from __future__ import annotations

import io
import signal
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from station.camera import CameraFailed, CameraTimeout
from station.genicam import CameraSettings, GenICamCamera
from tests.helpers import genicam
from tests.helpers.processes import Process
from tests.helpers.waiting import wait_for

ARAVIS = genicam.aravis_or_skip()


@pytest.fixture
def fake_camera(tmp_path) -> Iterator[tuple[str, list[Process]]]:
    with genicam.fake_camera(tmp_path) as camera:
        yield camera


def decoded(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def test_a_software_trigger_gives_one_tagged_frame_per_acquire(fake_camera):
    serial, _ = fake_camera
    camera = GenICamCamera(serial, name="top", settings=CameraSettings("Mono8", 2000.0, 1.0, (0, 0, 320, 240)))
    try:
        frames = [camera.acquire(2.0) for _ in range(3)]
        assert (camera.camera.get_exposure_time(), camera.camera.get_gain()) == (2000.0, 1.0)  # read back
    finally:
        camera.close()
    ids = [frame.frame_id for frame in frames]
    assert len(set(ids)) == 3 and ids == sorted(ids)  # one new frame per trigger, in order
    assert all(frame.camera_timestamp_ns for frame in frames)
    image = decoded(frames[0].data)
    assert (image.size, image.mode) == ((320, 240), "L")  # the ROI and the pixel format were applied
    assert frames[0].filename == f"top-{ids[0]}.png"


def test_the_camera_is_found_by_serial_or_id_and_an_unknown_one_is_refused(fake_camera):
    serial, _ = fake_camera
    camera = GenICamCamera(f"Aravis-Fake-{serial}")
    camera.close()
    with pytest.raises(CameraFailed, match="not found"):
        GenICamCamera("NO-SUCH-CAMERA")


def test_a_product_recipe_changes_pixel_format_and_roi_at_changeover(fake_camera):
    serial, _ = fake_camera
    recipes = {"bottle": CameraSettings("RGB8", roi=(0, 0, 64, 48)), "cap": CameraSettings("Mono16")}
    camera = GenICamCamera(serial, settings=CameraSettings("Mono8", roi=(0, 0, 128, 96)), recipes=recipes)
    try:
        first = decoded(camera.acquire(2.0).data)
        camera.select_product("bottle")
        colour = decoded(camera.acquire(2.0).data)
        camera.select_product("cap")
        deep = decoded(camera.acquire(2.0).data)
    finally:
        camera.close()
    assert (first.size, first.mode) == ((128, 96), "L")
    assert (colour.size, colour.mode) == ((64, 48), "RGB")
    assert deep.size == (128, 96) and deep.mode.startswith("I")  # 16-bit grey, the base ROI kept


def test_no_hardware_trigger_is_a_timeout_not_a_hang(fake_camera):
    serial, _ = fake_camera
    camera = GenICamCamera(serial, trigger="Line0", settings=CameraSettings("Mono8"))
    try:
        with pytest.raises(CameraTimeout, match=r"no frame within 0\.2 s"):
            camera.acquire(0.2)
        with pytest.raises(CameraTimeout):
            camera.acquire(0.1)  # and again: the camera is still usable
    finally:
        camera.close()


def test_a_killed_camera_fails_parts_then_is_reconnected_when_back(fake_camera, tmp_path):
    serial, processes = fake_camera
    camera = GenICamCamera(serial, settings=CameraSettings("Mono8"), first_backoff_s=0.05, max_backoff_s=0.2)
    try:
        assert camera.acquire(2.0).frame_id is not None
        processes[0].stop(signal.SIGKILL, timeout_s=10)

        def failed() -> CameraFailed | None:
            try:
                camera.acquire(0.3)
            except CameraTimeout:
                return None  # not noticed yet: the control channel's heartbeat has not timed out
            except CameraFailed as err:
                return err
            pytest.fail("a frame from a killed camera")

        assert "lost" in str(wait_for(failed, "the camera's loss to be noticed", timeout_s=30))
        assert camera.lost.is_set()
        processes.append(genicam.start_fake_camera(serial, tmp_path))

        def frame_again():
            try:
                return camera.acquire(2.0)
            except CameraFailed:
                return None

        frame = wait_for(frame_again, "a frame from the restarted camera", timeout_s=30)
        assert frame.frame_id is not None and camera.reconnects == 1
    finally:
        camera.close()


class StandInBuffer:
    """A received buffer as Aravis reports it: the fake camera never loses packets on loopback (its `-r` option
    did not make it), so incomplete buffers and early hardware-triggered frames are given as these."""

    def __init__(self, status, frame_id: int = 7, received_ns: int = 0) -> None:
        self.status, self.frame_id, self.received_ns = status, frame_id, received_ns
        self.data = bytes(range(4)) * 3

    def get_status(self):
        return self.status

    def get_frame_id(self) -> int:
        return self.frame_id

    def get_system_timestamp(self) -> int:
        return self.received_ns

    def get_timestamp(self) -> int:
        return 123

    def get_image_data(self) -> bytes:
        return self.data

    def get_image_width(self) -> int:
        return 4

    def get_image_height(self) -> int:
        return 3

    def get_image_pixel_format(self) -> int:
        return 0x01080001  # Mono8


class StandInStream:
    """`buffers` are waiting when the call comes; `later` arrive while it waits (timeout_pop_buffer)."""

    def __init__(self, *buffers, later=()) -> None:
        self.output, self.later, self.given_back = list(buffers), list(later), []

    def try_pop_buffer(self):
        return self.output.pop(0) if self.output else None

    def timeout_pop_buffer(self, _timeout_us: int):
        return self.later.pop(0) if self.later else None

    def push_buffer(self, buffer) -> None:
        self.given_back.append(buffer)


@pytest.mark.parametrize(
    "status, nick",
    [("MISSING_PACKETS", "missing-packets"), ("SIZE_MISMATCH", "size-mismatch"), ("TIMEOUT", "timeout")],
)
def test_an_incomplete_buffer_is_refused_with_its_status(fake_camera, status, nick):
    serial, _ = fake_camera
    camera = GenICamCamera(serial, settings=CameraSettings("Mono8"))
    try:
        with pytest.raises(CameraFailed, match=f"frame 7 refused: buffer {nick}"):
            camera.frame(StandInBuffer(getattr(ARAVIS.BufferStatus, status)))
        frame = camera.frame(StandInBuffer(ARAVIS.BufferStatus.SUCCESS))
    finally:
        camera.close()
    assert (frame.frame_id, frame.camera_timestamp_ns) == (7, 123)
    assert np.asarray(decoded(frame.data)).tolist() == [[0, 1, 2, 3]] * 3


def test_a_hardware_triggered_frame_just_before_the_call_is_taken_an_older_one_dropped(fake_camera):
    serial, _ = fake_camera
    camera = GenICamCamera(serial, trigger="Line0", settings=CameraSettings("Mono8"), stale_s=0.5)
    real_stream = camera.stream
    try:
        now = 10_000_000_000
        old, recent = (StandInBuffer(ARAVIS.BufferStatus.SUCCESS, n, now - ago) for n, ago in ((1, 900e6), (2, 100e6)))
        camera.stream = StandInStream(old, recent)
        assert camera.waiting_buffer(now) is recent
        assert camera.stream.given_back == [old]
        camera.trigger = "Software"  # a software trigger's frame must follow it: both are dropped
        camera.stream = StandInStream(old, recent)
        assert camera.waiting_buffer(now) is None and camera.stream.given_back == [old, recent]
    finally:
        camera.stream = real_stream
        camera.close()


@pytest.mark.parametrize("then", ["nothing", "a frame"])
def test_a_buffer_given_back_unfilled_is_not_a_frame_and_the_wait_goes_on(fake_camera, then):
    """Under load Aravis may hand back a buffer it cleared without writing an image into it (status CLEARED): that is
    no frame and no camera failure; the station waits on for the trigger's frame until its timeout."""
    serial, _ = fake_camera
    camera = GenICamCamera(serial, trigger="Line0", settings=CameraSettings("Mono8"))
    real_stream = camera.stream
    cleared = StandInBuffer(ARAVIS.BufferStatus.CLEARED, frame_id=0)
    later = [cleared] if then == "nothing" else [cleared, StandInBuffer(ARAVIS.BufferStatus.SUCCESS, frame_id=8)]
    try:
        camera.stream = StandInStream(later=later)
        if then == "nothing":
            with pytest.raises(CameraTimeout, match=r"no frame within 0\.2 s"):
                camera.acquire(0.2)
        else:
            assert camera.acquire(0.2).frame_id == 8
        assert camera.stream.given_back[0] is cleared
    finally:
        camera.stream = real_stream
        camera.close()
