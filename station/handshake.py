"""The line's handshake, one state machine for every protocol (Modbus TCP today; OPC UA and MQTT adapters call
the same four methods and read the same snapshot):

    READY --trigger--> ACQUIRING --frame--> INSPECTING --verdict or error--> RESULT_READY --acknowledge--> READY

Without `acknowledge`, a result goes straight back to READY and stays shown until the next trigger. Every part
ends with a result: OK, NG, or ERROR with its code (never OK: the fail-safe decides whether an ERROR rejects).
Adapters call `trigger`, `acknowledge` and `change_product` (they never block) and read `snapshot()`; one
worker thread runs `serve`, which does the slow part (camera, service) one job at a time.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Any

from station.camera import Camera, CameraError, CameraTimeout
from station.codes import ErrorCode
from station.inspector import InspectFailed, Inspection, Inspector, Part
from station.metrics import StationMetrics

log = logging.getLogger(__name__)

SERVICE_STAGES = ("decode", "queue", "predict", "encode")


class State(IntEnum):
    """The handshake's state, as the line reads it (the Modbus State register holds these numbers)."""

    STARTING = 0
    READY = 1
    ACQUIRING = 2
    INSPECTING = 3
    RESULT_READY = 4
    STOPPED = 5


class Verdict(StrEnum):
    """OK: the part is good; NG: it is bad; ERROR: nobody knows (a code says why)."""

    OK = "OK"
    NG = "NG"
    ERROR = "ERROR"


class FailSafe(StrEnum):
    """What an ERROR does: `reject` sets the Reject output (the part goes out as if NG); `hold` sets only Error and
    leaves the decision (stop the line, divert for a second look) to the PLC. No choice makes an ERROR an OK."""

    REJECT = "reject"
    HOLD = "hold"


@dataclass(frozen=True)
class Settings:
    """The handshake's timeouts (seconds) and rules."""

    acquire_timeout_s: float = 1.0
    inspect_timeout_s: float = 0.2
    changeover_timeout_s: float = 5.0
    acknowledge: bool = True
    fail_safe: FailSafe = FailSafe.REJECT


@dataclass(frozen=True)
class ProductTable:
    """The products the line can select, by index (1, 2, ... as the PLC numbers them) and by id."""

    products: dict[int, str]

    def resolve(self, selector: int | str) -> tuple[int, str] | None:
        """(index, product id) for an index or a product id; None when the table has neither."""
        if isinstance(selector, int):
            return (selector, self.products[selector]) if selector in self.products else None
        return next(((index, pid) for index, pid in self.products.items() if pid == selector), None)


@dataclass(frozen=True)
class PartResult:
    """One part's outcome. `reject` is what the line does with it: NG, or ERROR under the `reject` fail-safe."""

    sequence: int  # 1, 2, ... per station run: tells a new result from the last one
    verdict: Verdict
    code: ErrorCode
    reject: bool
    part_id: str | None
    product_index: int
    product_id: str | None
    score: float | None = None
    threshold: float | None = None
    n_regions: int = 0
    inspection_id: str | None = None
    rule: str | None = None
    message: str = ""
    stage_ms: dict[str, float] = field(default_factory=dict)  # see station.metrics.STAGES
    trigger_time: datetime | None = None
    frame_id: int | None = None  # the camera's own frame id and timestamp (GenICam)
    camera_timestamp_ns: int | None = None
    views: tuple[dict[str, Any], ...] = ()  # a multi-view part's results per view (station.views)

    def record(self) -> dict[str, Any]:
        """The result as one JSON object (the results file, logs)."""
        return {
            "sequence": self.sequence,
            "verdict": self.verdict.value,
            "code": int(self.code),
            "error": self.code.name if self.code else None,
            "reject": self.reject,
            "part_id": self.part_id,
            "product_index": self.product_index,
            "product_id": self.product_id,
            "score": self.score,
            "threshold": self.threshold,
            "n_regions": self.n_regions,
            "inspection_id": self.inspection_id,
            "rule": self.rule,
            "message": self.message,
            "stage_ms": {stage: round(ms, 3) for stage, ms in self.stage_ms.items()},
            "trigger_time": self.trigger_time.isoformat() if self.trigger_time else None,
            "frame_id": self.frame_id,
            "camera_timestamp_ns": self.camera_timestamp_ns,
            "views": list(self.views),
        }


@dataclass(frozen=True)
class Snapshot:
    """What the line sees now. `shown` is the result on the outputs (None once acknowledged or re-triggered);
    `last` the latest result (its numbers stay readable after the acknowledge)."""

    state: State
    shown: PartResult | None
    last: PartResult | None
    active_index: int
    active_product: str
    changeover_pending: bool = False
    changeover_failed: bool = False
    refused_triggers: int = 0

    @property
    def ready(self) -> bool:
        """A trigger would be taken now."""
        return self.state == State.READY

    @property
    def busy(self) -> bool:
        """A part is being acquired or inspected."""
        return self.state in (State.ACQUIRING, State.INSPECTING)

    def flag(self, verdict: Verdict) -> bool:
        """Whether the shown result has this verdict."""
        return self.shown is not None and self.shown.verdict == verdict


@dataclass(frozen=True)
class PartJob:
    """A trigger taken: the part to acquire and inspect."""

    part_id: str | None
    product_index: int  # 0: the active product
    triggered: float  # monotonic seconds
    trigger_time: datetime


@dataclass(frozen=True)
class ChangeoverJob:
    """A changeover asked for: the product index or id."""

    selector: int | str


class DeadlineExceeded(Exception):
    """A camera or service call outlived its timeout."""


class Handshake:
    """The state machine. Thread-safe: adapters call it from their own threads."""

    def __init__(
        self,
        camera: Camera,
        inspector: Inspector,
        products: ProductTable,
        active: int | str,
        settings: Settings | None = None,
        metrics: StationMetrics | None = None,
        on_result: Sequence[Callable[[PartResult], None]] = (),
        starting: bool = False,
    ) -> None:
        """`starting`: begin in STARTING (triggers refused) until `start()`, e.g. while the service is checked."""
        resolved = products.resolve(active)
        if resolved is None:
            raise ValueError(f"the active product {active!r} is not in the product table")
        self.camera, self.inspector, self.products = camera, inspector, products
        self.settings = settings or Settings()
        self.metrics = metrics or StationMetrics()
        self.on_result = list(on_result)
        self.lock = threading.Lock()
        self.jobs: queue.Queue[PartJob | ChangeoverJob] = queue.Queue()
        self.calls = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="station-call")
        self.stopping = False
        self.sequence = 0
        self.view = Snapshot(State.STARTING if starting else State.READY, None, None, *resolved)
        self.metrics.state.set(self.view.state)

    def start(self) -> None:
        """STARTING -> READY: triggers are taken from now on."""
        with self.lock:
            if self.view.state == State.STARTING:
                self.update(state=State.READY)

    def snapshot(self) -> Snapshot:
        """The current state, result and product (a consistent copy)."""
        return self.view

    def update(self, **changes: Any) -> None:
        """Replace fields of the snapshot (call with the lock held)."""
        self.view = replace(self.view, **changes)
        self.metrics.state.set(self.view.state)

    # --- what the line asks (never blocks) ---

    def trigger(self, part_id: str | None = None, product_index: int = 0) -> bool:
        """Take a part: True when the station was READY (it goes busy), else False and counted as refused.
        `product_index` 0 inspects with the active product."""
        with self.lock:
            if self.view.state != State.READY or self.stopping:
                self.update(refused_triggers=self.view.refused_triggers + 1)
                self.metrics.refused_triggers.inc()
                log.warning("trigger refused (part %s): the station is %s", part_id, self.view.state.name)
                return False
            self.update(state=State.ACQUIRING, shown=None)
            self.jobs.put(PartJob(part_id, product_index, time.monotonic(), datetime.now(UTC)))
        return True

    def acknowledge(self) -> bool:
        """The line has read the result: clear it and be READY. False when there was no result to acknowledge."""
        with self.lock:
            if self.view.state == State.RESULT_READY:
                self.update(state=State.READY if not self.stopping else State.STOPPED, shown=None)
                return True
            if self.view.state == State.READY and self.view.shown is not None:
                self.update(shown=None)  # acknowledge not required, but given: clear the outputs all the same
                return True
        return False

    def change_product(self, selector: int | str) -> bool:
        """Ask for a changeover to a product index or id; done by the worker after the part in progress, confirmed
        by `active_index`/`active_product` (or `changeover_failed`). False when the station is stopping."""
        with self.lock:
            if self.stopping:
                return False
            self.update(changeover_pending=True, changeover_failed=False)
            self.jobs.put(ChangeoverJob(selector))
        return True

    # --- the worker ---

    def serve(self, stop: threading.Event, poll_s: float = 0.05) -> None:
        """Run jobs until `stop` is set; then refuse new triggers, finish the jobs taken (the part in progress
        included) and end STOPPED."""
        while not stop.is_set():
            self.run_next(poll_s)
        with self.lock:
            self.stopping = True
        while self.run_next(0):
            pass
        with self.lock:
            if self.view.state == State.READY:
                self.update(state=State.STOPPED)
        self.calls.shutdown(wait=False, cancel_futures=True)

    def run_next(self, timeout_s: float | None = None) -> bool:
        """Run the next job, waiting up to `timeout_s` for one (None: forever); False when there was none."""
        try:
            job = self.jobs.get(timeout=timeout_s) if timeout_s != 0 else self.jobs.get_nowait()
        except queue.Empty:
            return False
        if isinstance(job, PartJob):
            self.run_part(job)
        else:
            self.run_changeover(job)
        return True

    def call(self, timeout_s: float, function: Callable[..., Any], *args: Any) -> Any:
        """`function(*args)` in the call pool, given up after `timeout_s` (DeadlineExceeded): the reject window is
        kept whatever the camera or the HTTP stack does; a late answer is dropped."""
        future = self.calls.submit(function, *args)
        try:
            return future.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError as err:
            raise DeadlineExceeded(f"{getattr(function, '__qualname__', function)}: over {timeout_s:g} s") from err

    def run_part(self, job: PartJob) -> None:
        """Acquire, inspect, publish one part's result; every failure becomes an ERROR result with its code."""
        stage_ms: dict[str, float] = {}
        view = self.view
        resolved = (
            self.products.resolve(job.product_index) if job.product_index else (view.active_index, view.active_product)
        )
        base = {
            "part_id": job.part_id,
            "product_index": job.product_index or view.active_index,
            "product_id": resolved[1] if resolved else None,
        }
        responded = job.triggered
        frame = None
        try:
            if resolved is None:
                raise InspectFailed(ErrorCode.UNKNOWN_PRODUCT, f"product index {job.product_index} is not configured")
            frame = self.acquire()
            taken = time.monotonic()
            stage_ms["acquire"] = (taken - job.triggered) * 1000
            with self.lock:
                self.update(state=State.INSPECTING)
            part = Part(resolved[1], job.part_id, job.trigger_time)
            sent = time.monotonic()
            stage_ms["prepare"] = (sent - taken) * 1000
            inspection = self.inspect(frame, part)
            responded = time.monotonic()
            stage_ms["request"] = (responded - sent) * 1000
            stage_ms |= {s: inspection.timings_ms[s] for s in SERVICE_STAGES if s in inspection.timings_ms}
            result = self.verdict(inspection, base)
        except InspectFailed as err:
            responded = time.monotonic()
            result = replace(self.error(err.code, str(err), base), views=getattr(err, "views", ()))
        except Exception as err:
            log.exception("part %s: unexpected error", job.part_id)
            responded = time.monotonic()
            result = self.error(ErrorCode.INTERNAL, f"{type(err).__name__}: {err}", base)
        tags = {
            "frame_id": getattr(frame, "frame_id", None),
            "camera_timestamp_ns": getattr(frame, "camera_timestamp_ns", None),
        }
        result = replace(result, stage_ms=stage_ms, trigger_time=job.trigger_time, **tags)
        self.publish(result, job.triggered, responded)

    def acquire(self) -> Any:
        """The camera's frame within acquire_timeout_s; raises InspectFailed (CAMERA_TIMEOUT or CAMERA_FAILED)."""
        timeout_s = self.settings.acquire_timeout_s
        try:
            return self.call(timeout_s, self.camera.acquire, timeout_s)
        except (CameraTimeout, DeadlineExceeded) as err:
            raise InspectFailed(ErrorCode.CAMERA_TIMEOUT, f"camera {self.camera.name}: {err}") from err
        except CameraError as err:
            raise InspectFailed(ErrorCode.CAMERA_FAILED, f"camera {self.camera.name}: {err}") from err

    def inspect(self, frame: Any, part: Part) -> Inspection:
        """The service's verdict within inspect_timeout_s; raises InspectFailed."""
        timeout_s = self.settings.inspect_timeout_s
        try:
            return self.call(timeout_s, self.inspector.inspect, frame, part, timeout_s)
        except DeadlineExceeded as err:
            raise InspectFailed(ErrorCode.SERVICE_TIMEOUT, f"no verdict within {timeout_s:g} s") from err

    def verdict(self, inspection: Inspection, base: dict[str, Any]) -> PartResult:
        """An OK or NG result from the service's answer."""
        verdict = Verdict.NG if inspection.anomalous else Verdict.OK
        return PartResult(
            sequence=0,
            verdict=verdict,
            code=ErrorCode.NONE,
            reject=verdict == Verdict.NG,
            score=inspection.score,
            threshold=inspection.threshold,
            n_regions=inspection.n_regions,
            inspection_id=inspection.inspection_id,
            rule=inspection.rule,
            views=inspection.views,
            **base,
        )

    def error(self, code: ErrorCode, message: str, base: dict[str, Any]) -> PartResult:
        """An ERROR result; `reject` as the fail-safe says."""
        reject = self.settings.fail_safe == FailSafe.REJECT
        return PartResult(sequence=0, verdict=Verdict.ERROR, code=code, reject=reject, message=message, **base)

    def publish(self, result: PartResult, triggered: float, responded: float) -> None:
        """Show the result to the line (the snapshot the adapters read), then log, count and hand it on."""
        with self.lock:
            self.sequence += 1
            published = time.monotonic()
            stage_ms = {**result.stage_ms, "output": (published - responded) * 1000}
            stage_ms["total"] = (published - triggered) * 1000
            result = replace(result, sequence=self.sequence, stage_ms=stage_ms)
            state = State.RESULT_READY if self.settings.acknowledge else State.READY
            self.update(state=state, shown=result, last=result)
        self.metrics.observe_stages(result.stage_ms)
        self.metrics.results.labels(result.verdict.value, result.code.name).inc()
        if result.verdict == Verdict.ERROR:
            log.error("part %s: ERROR %d %s: %s", result.part_id, result.code, result.code.name, result.message)
        else:
            log.info(
                "part %s: %s (score %.4g, threshold %.4g, %.1f ms)",
                result.part_id,
                result.verdict.value,
                result.score,
                result.threshold,
                stage_ms["total"],
            )
        for listener in self.on_result:
            try:
                listener(result)
            except Exception:
                log.exception("a result output failed; the line has its result")

    def run_changeover(self, job: ChangeoverJob) -> None:
        """Make the product active once the service confirms it has its references; else keep the current one."""
        resolved = self.products.resolve(job.selector)
        failure = None
        if resolved is None:
            failure = f"product {job.selector!r} is not in the product table"
        else:
            timeout_s = self.settings.changeover_timeout_s
            try:
                self.call(timeout_s, self.inspector.check_product, resolved[1], timeout_s)
                select = getattr(self.camera, "select_product", None)  # a camera with a recipe per product
                if select is not None:
                    self.call(timeout_s, select, resolved[1])
            except (InspectFailed, CameraError, DeadlineExceeded) as err:
                failure = f"product {resolved[1]!r}: {err}"
        with self.lock:
            if failure is None and resolved is not None:
                self.update(active_index=resolved[0], active_product=resolved[1], changeover_pending=False)
            else:
                self.update(changeover_pending=False, changeover_failed=True)
        self.metrics.changeovers.labels("failed" if failure else "done").inc()
        if failure:
            log.error("changeover refused, %s stays active: %s", self.view.active_product, failure)
        else:
            log.info("changeover: product %d %s active", self.view.active_index, self.view.active_product)
