"""Parts seen in several views: a part type names its views (a camera and its lighting, each inspected as a product
of its own, with its own references and thresholds). Every view of one trigger is acquired (cameras at once, views
of the same camera one after another), each sent to its product with the same part_id and its view name, and the
part gets one verdict: ERROR when any view is missing or failed, else NG when any view is NG, else OK. A part is
never OK on some of its views."""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass, field
from typing import Any

from station.camera import Camera, CameraError, CameraFailed, CameraTimeout, Frame
from station.codes import ErrorCode
from station.inspector import HttpInspector, InspectFailed, Inspection, Part

VIEW_MARGIN_S = 0.05  # taken off the acquire timeout for the views, at most a tenth of it


@dataclass(frozen=True)
class View:
    """One view of a part type: its name, the camera that takes it, the service's product that judges it."""

    name: str
    camera: str
    product_id: str


@dataclass(frozen=True)
class PartFrames:
    """One trigger's frames, one per view (a Frame the handshake can time and hand on; `data` is the first's)."""

    product_id: str  # the part type the views were acquired for
    frames: dict[str, Frame]  # view name -> frame
    data: bytes = b""
    filename: str = ""
    frame_id: int | None = None
    camera_timestamp_ns: int | None = None


class MultiViewCamera:
    """Acquires every view of the active part type per trigger (`select_product` at changeover picks the views).
    Raises CameraTimeout when a view has no frame in time, CameraFailed when a camera failed: either names the
    views. A part type without views is acquired from `default` (the first camera) alone."""

    def __init__(self, cameras: dict[str, Camera], views: dict[str, list[View]], active: str) -> None:
        self.cameras, self.views, self.name = cameras, views, "+".join(cameras)
        self.pool = concurrent.futures.ThreadPoolExecutor(len(cameras), thread_name_prefix="view")
        self.active = active

    def select_product(self, product_id: str) -> None:
        """Acquire this part type's views from now on; applies its camera recipes (`select_product` of a camera
        that has one) for every view's product."""
        for view in self.views_of(product_id):
            select = getattr(self.cameras[view.camera], "select_product", None)
            if select is not None:
                select(view.product_id)
        self.active = product_id

    def views_of(self, product_id: str) -> list[View]:
        """The views of a part type; a type without views is one view of the first camera."""
        return self.views.get(product_id) or [View("main", next(iter(self.cameras)), product_id)]

    def acquire(self, timeout_s: float) -> PartFrames:
        """Every view's frame within `timeout_s`; raises CameraTimeout or CameraFailed naming the missing views."""
        by_camera: dict[str, list[View]] = {}
        for view in self.views_of(self.active):
            by_camera.setdefault(view.camera, []).append(view)
        each_s = timeout_s - min(VIEW_MARGIN_S, timeout_s / 10)  # so the views' errors come before the deadline's
        futures = {name: self.pool.submit(self.take, name, views, each_s) for name, views in by_camera.items()}
        frames: dict[str, Frame] = {}
        failures: list[tuple[str, CameraError]] = []
        for future in futures.values():
            taken, failed = future.result()
            frames |= taken
            failures += failed
        if failures:
            why = "; ".join(f"view {view}: {err}" for view, err in failures)
            timeouts = all(isinstance(err, CameraTimeout) for _, err in failures)
            raise (CameraTimeout if timeouts else CameraFailed)(f"{len(failures)} view(s) missing: {why}")
        first = next(iter(frames.values()))
        return PartFrames(self.active, frames, first.data, first.filename, first.frame_id, first.camera_timestamp_ns)

    def take(
        self, camera: str, views: list[View], timeout_s: float
    ) -> tuple[dict[str, Frame], list[tuple[str, CameraError]]]:
        """One camera's views, in order (one frame per view: its lighting changes between them)."""
        frames: dict[str, Frame] = {}
        failed: list[tuple[str, CameraError]] = []
        for view in views:
            try:
                frames[view.name] = self.cameras[camera].acquire(timeout_s)
            except CameraError as err:
                failed.append((view.name, err))
        return frames, failed

    def close(self) -> None:
        """Close every camera."""
        self.pool.shutdown(wait=False, cancel_futures=True)
        for camera in self.cameras.values():
            camera.close()


@dataclass(frozen=True)
class ViewResult:
    """One view's outcome: its verdict ("OK", "NG", "ERROR") and evidence."""

    view: str
    camera: str
    product_id: str
    verdict: str
    code: ErrorCode = ErrorCode.NONE
    score: float | None = None
    threshold: float | None = None
    n_regions: int = 0
    inspection_id: str | None = None
    rule: str | None = None
    message: str = ""
    frame_id: int | None = None
    camera_timestamp_ns: int | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    regions: tuple[dict[str, Any], ...] = ()

    def record(self) -> dict[str, Any]:
        """The view as one JSON object (inside the part's record)."""
        return {
            "view": self.view,
            "camera": self.camera,
            "product_id": self.product_id,
            "verdict": self.verdict,
            "code": int(self.code),
            "error": self.code.name if self.code else None,
            "score": self.score,
            "threshold": self.threshold,
            "n_regions": self.n_regions,
            "regions": list(self.regions),
            "inspection_id": self.inspection_id,
            "rule": self.rule,
            "message": self.message,
            "frame_id": self.frame_id,
            "camera_timestamp_ns": self.camera_timestamp_ns,
        }


class ViewsFailed(InspectFailed):
    """A view got no verdict: the part is an ERROR, with every view's result as evidence."""

    def __init__(self, code: ErrorCode, message: str, views: tuple[dict[str, Any], ...]) -> None:
        super().__init__(code, message)
        self.views = views


def combine(results: list[ViewResult]) -> tuple[str, ErrorCode]:
    """The part's verdict and code: ERROR (the first failed view's code) when any view failed, NG when any is NG,
    OK only when every view is OK."""
    failed = [r for r in results if r.verdict == "ERROR"]
    if failed:
        return "ERROR", failed[0].code
    return ("NG" if any(r.verdict == "NG" for r in results) else "OK"), ErrorCode.NONE


class MultiViewInspector:
    """Sends each view's frame to its product at once (`view` and the part's `part_id` in every request) and
    answers one Inspection for the part, its `views` the evidence; raises ViewsFailed when any view failed."""

    def __init__(
        self,
        url: str,
        api_key: str | None,
        station: str,
        views: dict[str, list[View]],
        camera: str,
        allow_random_weights: bool = False,
    ) -> None:
        self.views, self.camera = views, camera
        names = {(v.camera, v.name) for vs in views.values() for v in vs} | {(camera, None)}
        self.http = {
            key: HttpInspector(url, api_key, station, key[0], view=key[1], allow_random_weights=allow_random_weights)
            for key in names
        }
        self.pool = concurrent.futures.ThreadPoolExecutor(max(1, len(names)), thread_name_prefix="view-inspect")

    def check_product(self, product_id: str, timeout_s: float) -> None:
        """Every view's product must be known to the service; raises InspectFailed."""
        for view in self.views.get(product_id) or [View("main", self.camera, product_id)]:
            self.http[(self.camera, None)].check_product(view.product_id, timeout_s)

    def inspect(self, frame: Frame | PartFrames, part: Part, timeout_s: float) -> Inspection:
        """The part's Inspection (the deciding view's score) with every view's result; raises ViewsFailed."""
        views = self.views.get(part.product_id)
        if not views:
            return self.http[(self.camera, None)].inspect(frame, part, timeout_s)  # a single-view part type
        if not isinstance(frame, PartFrames) or frame.product_id != part.product_id:
            acquired = getattr(frame, "product_id", None)
            raise InspectFailed(
                ErrorCode.CONFIGURATION, f"views acquired for {acquired}, the part is {part.product_id}: change over"
            )
        futures = [
            self.pool.submit(self.inspect_view, view, frame.frames[view.name], part, timeout_s) for view in views
        ]
        results = [future.result() for future in futures]
        verdict, code = combine(results)
        records = tuple(r.record() for r in results)
        if verdict == "ERROR":
            why = "; ".join(f"view {r.view}: {r.message}" for r in results if r.verdict == "ERROR")
            raise ViewsFailed(code, why, records)
        deciding = max(results, key=lambda r: (r.verdict == "NG", (r.score or 0) - (r.threshold or 0)))
        return Inspection(
            anomalous=verdict == "NG",
            score=float(deciding.score or 0.0),
            threshold=float(deciding.threshold or 0.0),
            n_regions=sum(r.n_regions for r in results),
            inspection_id=str(deciding.inspection_id),
            rule=deciding.rule,
            timings_ms=deciding.timings_ms,
            views=records,
        )

    def inspect_view(self, view: View, frame: Frame, part: Part, timeout_s: float) -> ViewResult:
        """One view's verdict, a failure as an ERROR ViewResult."""
        tags = {"view": view.name, "camera": view.camera, "product_id": view.product_id}
        frame_tags = {"frame_id": frame.frame_id, "camera_timestamp_ns": frame.camera_timestamp_ns}
        try:
            found = self.http[(view.camera, view.name)].inspect(
                frame, Part(view.product_id, part.part_id, part.trigger_time), timeout_s
            )
        except InspectFailed as err:
            return ViewResult(**tags, verdict="ERROR", code=err.code, message=str(err), **frame_tags)
        return ViewResult(
            **tags,
            verdict="NG" if found.anomalous else "OK",
            score=found.score,
            threshold=found.threshold,
            n_regions=found.n_regions,
            inspection_id=found.inspection_id,
            rule=found.rule,
            timings_ms=found.timings_ms,
            regions=found.regions,
            **frame_tags,
        )

    def close(self) -> None:
        """Close the connections."""
        self.pool.shutdown(wait=False, cancel_futures=True)
        for http in self.http.values():
            http.close()
