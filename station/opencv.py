"""OpenCV capture (a device index or an RTSP/HTTP URL): the camera client's spooler and the station's
`OpenCVCamera` share it. Needs opencv-python-headless, a dependency of the package (the `camera` extra is empty)."""

from __future__ import annotations

import logging
import threading
from typing import Any

from station.camera import CameraFailed, CameraTimeout, Frame

log = logging.getLogger(__name__)

OPENCV_MISSING = (
    "camera capture needs OpenCV, which is not installed: pip install opencv-python-headless "
    "(a dependency of dcpsfr-inspect; its `camera` extra is empty and installs nothing more)"
)


class CameraUnavailable(CameraFailed, RuntimeError):
    """OpenCV is missing or the camera cannot be opened."""


def import_cv2() -> Any:
    """The cv2 module; raises CameraUnavailable when OpenCV is not installed."""
    try:
        import cv2
    except ImportError as err:
        raise CameraUnavailable(OPENCV_MISSING) from err
    return cv2


def capture_source(source: str) -> int | str:
    """`0`, `1`, ... are device indices; anything else is a URL (rtsp://...) or a video file path."""
    return int(source) if source.isdigit() else source


def open_capture(source: str) -> Any:
    """An opened cv2.VideoCapture for a device index or URL/path; raises CameraUnavailable when it cannot be opened."""
    cv2 = import_cv2()
    capture = cv2.VideoCapture(capture_source(source))
    if not capture.isOpened():
        capture.release()
        raise CameraUnavailable(f"cannot open camera {source!r}: check the device index or the stream URL")
    return capture


class OpenCVCamera:
    """A free-running stream (RTSP, a USB device): each trigger takes the next frame read after it, as PNG.

    A read that fails reopens the stream once; a stream that gives nothing within the timeout is CameraTimeout
    (the read goes on in the background and its frame is dropped)."""

    def __init__(self, source: str, name: str = "camera") -> None:
        self.cv2 = import_cv2()
        self.source, self.name = source, name
        self.capture = open_capture(source)
        self.lock = threading.Lock()

    def acquire(self, timeout_s: float) -> Frame:
        """The next frame as PNG bytes; raises CameraTimeout or CameraFailed."""
        done = threading.Event()
        box: dict[str, Any] = {}

        def read() -> None:
            with self.lock:
                try:
                    box["frame"] = self.read_png()
                except Exception as err:  # handed to the caller below
                    box["error"] = err
            done.set()

        threading.Thread(target=read, name=f"{self.name}-read", daemon=True).start()
        if not done.wait(timeout_s):
            raise CameraTimeout(f"camera {self.name}: no frame within {timeout_s:g} s")
        if "error" in box:
            raise box["error"]
        return box["frame"]

    def read_png(self) -> Frame:
        """One frame read now, encoded as PNG; reopens the stream once when the read fails."""
        ok, image = self.capture.read()  # (H, W, 3) BGR uint8
        if not ok:
            log.warning("camera %s: no frame; reopening %s", self.name, self.source)
            self.capture.release()
            self.capture = open_capture(self.source)
            ok, image = self.capture.read()
            if not ok:
                raise CameraFailed(f"camera {self.name}: {self.source} gives no frames")
        ok, png = self.cv2.imencode(".png", image)
        if not ok:
            raise CameraFailed(f"camera {self.name}: OpenCV could not encode a frame as PNG")
        return Frame(png.tobytes(), f"{self.name}.png")

    def close(self) -> None:
        """Release the stream."""
        with self.lock:
            self.capture.release()
