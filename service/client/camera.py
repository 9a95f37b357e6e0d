"""Optional OpenCV capture (`watch DIR --camera 0` or an RTSP URL): frames are written as PNG files into the
watched folder, so they get the same once-only, durable handling as files from any other source.

Opening the capture is shared with the station (`station.opencv`). Needs OpenCV (opencv-python-headless), a
dependency of the package; the `camera` extra is kept, empty, for old install commands.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from model import write_atomic
from station.opencv import OPENCV_MISSING, CameraUnavailable, capture_source, import_cv2, open_capture

log = logging.getLogger(__name__)

__all__ = ["OPENCV_MISSING", "CameraSpooler", "CameraUnavailable", "capture_source", "import_cv2", "open_capture"]


class CameraSpooler(threading.Thread):
    """Grabs frames at up to `fps` and writes each one atomically as `<prefix>-<UTC time>-<n>.png` into `folder`.

    A live camera that stops delivering frames is reopened with backoff; a video file ends the capture.
    """

    def __init__(self, source: str, folder: Path, stop: threading.Event, fps: float = 2.0, prefix: str = "cam") -> None:
        super().__init__(name="camera", daemon=True)
        self.cv2 = import_cv2()
        self.source = source
        self.folder = folder
        self.stop = stop
        self.period_s = 1.0 / fps if fps > 0 else 0.0
        self.prefix = prefix
        self.written = 0
        self.error: Exception | None = None
        self.capture = open_capture(source)

    @property
    def is_file(self) -> bool:
        """Whether the source is a video file (it ends the capture instead of being reopened)."""
        return Path(self.source).is_file()

    def run(self) -> None:
        """The thread body: capture until stopped; an error is kept
        in `error` and logged, the capture always released."""
        try:
            self.capture_until_stopped()
        except Exception as err:  # reported by the caller; the watcher keeps sending what was captured
            self.error = err
            log.exception("camera %s: capture stopped", self.source)
        finally:
            self.capture.release()

    def capture_until_stopped(self) -> None:
        """Read and save frames at up to `fps` until the stop event is set or a video file ends; a live source without
        frames is reopened with backoff (1 s doubling, at most 30 s)."""
        failures = 0
        while not self.stop.is_set():
            started = time.monotonic()
            ok, image = self.capture.read()  # (H, W, 3) BGR uint8
            if not ok:
                if self.is_file:
                    log.info("camera %s: end of video after %d frames", self.source, self.written)
                    return
                failures += 1
                delay = min(0.5 * 2**failures, 30.0)
                log.warning("camera %s: no frame; reopening in %.1f s", self.source, delay)
                self.stop.wait(delay)
                self.capture.release()
                self.capture = self.cv2.VideoCapture(capture_source(self.source))
                continue
            failures = 0
            self.save(image)
            self.stop.wait(max(0.0, self.period_s - (time.monotonic() - started)))

    def save(self, image: Any) -> Path:
        """Write one BGR frame as PNG (atomically) into the folder; returns its path. Raises RuntimeError when OpenCV
        cannot encode it."""
        ok, png = self.cv2.imencode(".png", image)
        if not ok:
            raise RuntimeError("OpenCV could not encode a frame as PNG")
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        path = self.folder / f"{self.prefix}-{stamp}-{self.written:06d}.png"
        write_atomic(path, png.tobytes())
        self.written += 1
        return path
