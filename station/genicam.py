"""GenICam cameras (GigE Vision, USB3 Vision) through Aravis: one frame per trigger, software or hardware.

Needs Aravis's GObject bindings: Debian's `gir1.2-aravis-0.8` and `python3-gi` (the station also finds Debian's
`gi` from a virtual environment of the same Python minor version). Every failure is a CameraError: no frame within
the timeout is CameraTimeout (a missing hardware trigger included), an incomplete or corrupt buffer, a lost or
unopenable camera CameraFailed with its reason. A lost camera is reopened, at most once per backoff step (doubling
up to `max_backoff_s`); parts in between get CameraFailed at once instead of waiting.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from station.camera import CameraFailed, CameraTimeout, Frame
from station.pixels import buffer_png

log = logging.getLogger(__name__)

DEBIAN_GI = Path("/usr/lib/python3/dist-packages/gi")
SOFTWARE = "Software"


class AravisMissing(CameraFailed):
    """Aravis or its Python bindings are not installed."""


def debian_gi() -> ModuleType | None:
    """Debian's `python3-gi` package imported on its own (not the rest of dist-packages), when it is built for this
    Python; else None."""
    suffix = f"cpython-{sys.version_info.major}{sys.version_info.minor}"
    if not any(DEBIAN_GI.glob(f"_gi.{suffix}*.so")):
        return None
    spec = importlib.util.spec_from_file_location(
        "gi", DEBIAN_GI / "__init__.py", submodule_search_locations=[str(DEBIAN_GI)]
    )
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gi"] = module
    spec.loader.exec_module(module)
    return module


def load_aravis() -> ModuleType:
    """The `Aravis` 0.8 module; raises AravisMissing (with what to install) when it cannot be imported."""
    try:
        import gi
    except ImportError:
        gi = debian_gi()
    if gi is None:
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        raise AravisMissing(
            f"GenICam cameras need PyGObject for Python {version}: apt-get install python3-gi gir1.2-aravis-0.8 "
            f"(Debian's is built for its own Python), or pip install PyGObject"
        )
    try:
        gi.require_version("Aravis", "0.8")
        from gi.repository import Aravis
    except (ValueError, ImportError) as err:
        raise AravisMissing(f"GenICam cameras need Aravis 0.8: apt-get install gir1.2-aravis-0.8 ({err})") from err
    return Aravis


@dataclass(frozen=True)
class CameraSettings:
    """A product's camera recipe; None leaves the camera's value. `roi` is (x, y, width, height) in pixels."""

    pixel_format: str | None = None
    exposure_us: float | None = None
    gain_db: float | None = None
    roi: tuple[int, int, int, int] | None = None

    def merged(self, other: CameraSettings | None) -> CameraSettings:
        """These settings with `other`'s values where it sets them."""
        if other is None:
            return self
        return CameraSettings(
            other.pixel_format or self.pixel_format,
            other.exposure_us if other.exposure_us is not None else self.exposure_us,
            other.gain_db if other.gain_db is not None else self.gain_db,
            other.roi or self.roi,
        )


def find_device(aravis: ModuleType, device: str) -> str:
    """The Aravis device id of the camera whose id, serial number or address is `device` (empty: the first one);
    raises CameraFailed when none is found."""
    aravis.update_device_list()
    found = []
    for index in range(aravis.get_n_devices()):
        ids = (aravis.get_device_id(index), aravis.get_device_serial_nbr(index), aravis.get_device_address(index))
        found.append(ids[0])
        if not device or device in ids:
            return ids[0]
    raise CameraFailed(f"GenICam camera {device!r} not found; cameras seen: {', '.join(found) or 'none'}")


class GenICamCamera:
    """One GenICam camera in triggered acquisition. `trigger` is `Software` (the station triggers it on `acquire`)
    or a hardware line (`Line1`, ...: the PLC triggers the camera, `acquire` waits for its frame). In hardware mode
    a frame older than `stale_s` when `acquire` starts (a trigger nobody asked about) is dropped, not given to the
    part. Frames are PNG (see station.pixels) tagged with the camera's timestamp (ns) and frame id."""

    def __init__(
        self,
        device: str = "",
        name: str = "genicam",
        trigger: str = SOFTWARE,
        settings: CameraSettings | None = None,
        recipes: dict[str, CameraSettings] | None = None,
        buffers: int = 4,
        stale_s: float = 0.5,
        first_backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.aravis = load_aravis()
        self.device, self.name, self.trigger = device, name, trigger
        self.base = settings or CameraSettings()
        self.recipes = recipes or {}
        self.settings = self.base
        self.buffers, self.stale_s, self.clock = buffers, stale_s, clock
        self.first_backoff_s, self.max_backoff_s = first_backoff_s, max_backoff_s
        self.lock = threading.Lock()
        self.lost = threading.Event()
        self.camera: Any = None
        self.stream: Any = None
        self.backoff_s = first_backoff_s
        self.next_try = 0.0
        self.reconnects = 0  # successful reopenings after a loss
        self.open()

    # --- opening, settings, losing and reopening the camera ---

    def open(self) -> None:
        """Open the camera, apply the settings and start triggered acquisition; raises CameraFailed."""
        error = self.aravis_errors()
        try:
            device_id = find_device(self.aravis, self.device)
            self.camera = self.aravis.Camera.new(device_id)
            self.camera.get_device().connect("control-lost", lambda *_: self.lost.set())
            self.configure()
        except error as err:
            self.release()
            raise CameraFailed(f"camera {self.name}: cannot open {self.device or 'the first camera'}: {err}") from err
        self.lost.clear()
        log.info("camera %s: opened %s (%s, trigger %s)", self.name, device_id, self.settings, self.trigger)

    def aravis_errors(self) -> tuple[type[BaseException], ...]:
        """What Aravis raises (GLib.Error), with TypeError for a None a failed call returns."""
        from gi.repository import GLib

        return (GLib.Error, TypeError)

    def configure(self) -> None:
        """Apply the settings (acquisition stopped meanwhile) and (re)start the acquisition with fresh buffers."""
        camera, settings = self.camera, self.settings
        if self.stream is not None:
            camera.stop_acquisition()
            self.stream = None
        if settings.pixel_format:
            camera.set_pixel_format_from_string(settings.pixel_format)
        if settings.roi:
            camera.set_region(*settings.roi)
        if settings.exposure_us is not None:
            camera.set_exposure_time(settings.exposure_us)
        if settings.gain_db is not None:
            camera.set_gain(settings.gain_db)
        camera.set_acquisition_mode(self.aravis.AcquisitionMode.CONTINUOUS)
        camera.set_trigger(self.trigger)
        stream = camera.create_stream(None, None)
        payload = camera.get_payload()
        for _ in range(self.buffers):
            stream.push_buffer(self.aravis.Buffer.new_allocate(payload))
        camera.start_acquisition()
        self.stream = stream

    def select_product(self, product_id: str) -> None:
        """Apply the product's recipe (the base settings where it sets nothing); raises CameraFailed when the camera
        refuses a value."""
        with self.lock:
            self.settings = self.base.merged(self.recipes.get(product_id))
            if self.camera is None:
                return  # applied when the camera is reopened
            try:
                self.configure()
            except self.aravis_errors() as err:
                raise CameraFailed(f"camera {self.name}: the settings of {product_id} were refused: {err}") from err
        log.info("camera %s: settings of %s applied: %s", self.name, product_id, self.settings)

    def release(self) -> None:
        """Drop the camera and its stream (Aravis closes them when the objects go)."""
        if self.camera is not None and self.stream is not None:
            try:
                self.camera.stop_acquisition()
            except self.aravis_errors():
                pass  # a lost camera cannot be told to stop
        self.camera = self.stream = None

    def reconnect(self) -> None:
        """Reopen a lost camera when its backoff has passed; raises CameraFailed (lost, or the reopening failed)."""
        now = self.clock()
        if now < self.next_try:
            raise CameraFailed(f"camera {self.name} lost; next reconnection in {self.next_try - now:.1f} s")
        self.release()
        try:
            self.open()
        except CameraFailed as err:
            self.next_try = self.clock() + self.backoff_s
            log.warning("camera %s: reconnection failed, next in %.1f s: %s", self.name, self.backoff_s, err)
            self.backoff_s = min(self.backoff_s * 2, self.max_backoff_s)
            raise
        self.reconnects += 1
        self.backoff_s, self.next_try = self.first_backoff_s, 0.0
        log.warning("camera %s: reconnected (%d reconnections so far)", self.name, self.reconnects)

    def mark_lost(self, why: object) -> CameraFailed:
        """Note the camera as lost (reopened by a later acquire) and the error to raise."""
        if not self.lost.is_set():
            log.error("camera %s: lost: %s", self.name, why)
        self.lost.set()
        return CameraFailed(f"camera {self.name} lost: {why}")

    # --- acquisition ---

    def acquire(self, timeout_s: float) -> Frame:
        """The frame of the next trigger as PNG; raises CameraTimeout when none comes within `timeout_s`,
        CameraFailed for a lost camera or an incomplete buffer."""
        with self.lock:
            if self.lost.is_set() or self.camera is None:
                self.reconnect()
            buffer = self.waiting_buffer(time.time_ns())
            if buffer is None and self.trigger == SOFTWARE:
                try:
                    self.camera.software_trigger()
                except self.aravis_errors() as err:
                    raise self.mark_lost(err) from err
            if buffer is None:
                buffer = self.next_filled_buffer(time.monotonic() + timeout_s)
            if buffer is None:
                if self.lost.is_set():
                    raise self.mark_lost("control lost while waiting for the frame")
                raise CameraTimeout(f"camera {self.name}: no frame within {timeout_s:g} s ({self.trigger} trigger)")
            try:
                return self.frame(buffer)
            finally:
                self.stream.push_buffer(buffer)

    def next_filled_buffer(self, deadline: float) -> Any:
        """The next buffer the stream gives before `deadline` (time.monotonic()), None when none comes. A buffer given
        back never filled (status CLEARED: no image was written into it) is not a frame: it goes back to the stream
        and the wait goes on."""
        while (left := deadline - time.monotonic()) > 0:
            buffer = self.stream.timeout_pop_buffer(max(1, int(left * 1e6)))
            if buffer is None or buffer.get_status() != self.aravis.BufferStatus.CLEARED:
                return buffer
            log.debug("camera %s: an unfilled buffer came back; still waiting for the frame", self.name)
            self.stream.push_buffer(buffer)
        return None

    def waiting_buffer(self, started_ns: int) -> Any:
        """A frame already received that belongs to this trigger, else None; older ones are dropped (given back to
        the stream). For a software trigger none does (the frame must follow the trigger); for a hardware one the
        first received less than `stale_s` before the call (the camera's trigger may come before the station's)."""
        keep_after = started_ns - int(self.stale_s * 1e9)
        while (buffer := self.stream.try_pop_buffer()) is not None:
            if self.trigger != SOFTWARE and buffer.get_system_timestamp() >= keep_after:
                return buffer
            log.warning("camera %s: dropped frame %d, older than this trigger", self.name, buffer.get_frame_id())
            self.stream.push_buffer(buffer)
        return None

    def frame(self, buffer: Any) -> Frame:
        """The buffer as a Frame; raises CameraFailed for a buffer that is not complete or not an image."""
        status = buffer.get_status()
        if status != self.aravis.BufferStatus.SUCCESS:
            raise CameraFailed(f"camera {self.name}: frame {buffer.get_frame_id()} refused: buffer {status.value_nick}")
        png, _ = buffer_png(
            bytes(buffer.get_image_data()),
            buffer.get_image_width(),
            buffer.get_image_height(),
            buffer.get_image_pixel_format(),
        )
        frame_id = buffer.get_frame_id()
        return Frame(png, f"{self.name}-{frame_id}.png", frame_id=frame_id, camera_timestamp_ns=buffer.get_timestamp())

    def close(self) -> None:
        """Stop the acquisition and release the camera."""
        with self.lock:
            self.release()
