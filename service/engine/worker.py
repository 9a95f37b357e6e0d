"""The model worker: one thread owns the detector (not thread-safe) and serves a bounded queue.

Start-up (in the thread, so the HTTP server answers /healthz meanwhile): build the detector, run `setup`,
warm up, then state "ready". Forward jobs (frames already prepared in the decode pool) are batched
adaptively: the worker takes the first waiting job and everything queued behind it (up to `max_batch_size`
frames); it waits up to `max_wait_ms` for more only while admitted requests are still decoding (they are known
to be coming), so a request reaching an idle worker is never held. Each batch is grouped by product version,
one `detector.forward` per group (chunks of `max_batch_size`). Calls (fit + calibrate) run alone, in queue order.

Admission (`admit`) refuses before any work: Unavailable while the model is not ready, Overloaded when the queue
and the requests admitted ahead of it would fill it. Nothing waits forever: `result` waits at most `timeout_s`
(ModelTimeout), and an exception outside a forward fails every job the worker holds or has queued
(Unavailable), marks the worker failed (the reason goes to /readyz) and refuses everything after. Errors are
domain errors (service.errors): the worker knows nothing of HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from model import ConfigError, Detector, GridScores, PreparedBatch, ReferenceSet, WeightsMissingError
from service.errors import ModelTimeout, Overloaded, Unavailable
from service.metrics import Metrics
from service.products.store import StoreUnavailable

log = logging.getLogger(__name__)

POLL_S = 0.1  # how often an idle worker checks for shutdown
RETRY_AFTER_FULL_S = 1
RETRY_AFTER_LOADING_S = 5


@dataclass(frozen=True)
class Forwarded:
    """One forward job's answer: its grid scores, its time in the queue (ms) and the time of the forwards it was
    part of (ms)."""

    scores: GridScores
    queue_ms: float  # enqueue -> the worker starts this job's first forward
    predict_ms: float  # wall time of the forwards that contained this job's frames


@dataclass
class ForwardJob:
    """A queued forward: prepared frames of one product version and the future its Forwarded goes to."""

    refs: ReferenceSet
    batch: PreparedBatch
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.perf_counter)
    parts: list[GridScores] = field(default_factory=list)
    started: float | None = None
    predict_ms: float = 0.0

    def result(self) -> Forwarded:
        """The Forwarded of this job once its forwards have run."""
        return Forwarded(GridScores.merged(self.parts), (self.started - self.enqueued) * 1000.0, self.predict_ms)


@dataclass
class CallJob:
    """A queued call of `function(detector)` (fit + calibrate), run alone; its time is observed as `stage`."""

    function: Callable[[Detector], Any]
    stage: str
    future: Future = field(default_factory=Future)


class Ticket:
    """An admitted request that will submit a job: counted as incoming until it submits or gives up."""

    def __init__(self, worker: ModelWorker) -> None:
        self._worker = worker
        self._open = True

    def release(self) -> None:
        """Stop counting the request as incoming (idempotent)."""
        with self._worker._lock:
            if self._open:
                self._open = False
                self._worker._incoming -= 1

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class ModelWorker:
    """The thread that owns the detector and serves the queue (see the module docstring)."""

    def __init__(
        self,
        build_detector: Callable[[], Detector],
        setup: Callable[[Detector], None],
        metrics: Metrics,
        max_batch_size: int,
        max_wait_ms: float,
        queue_size: int,
        timeout_s: float = 120.0,
    ) -> None:
        self.build_detector = build_detector
        self.setup = setup
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.timeout_s = timeout_s
        self.queue: queue.Queue[ForwardJob | CallJob] = queue.Queue(maxsize=queue_size)
        self.detector: Detector | None = None
        self.state = "loading"  # -> "ready" | "failed"
        self.error = ""
        self._incoming = 0  # admitted requests still decoding; guarded by _lock
        self._lock = threading.Lock()
        self._held: list[ForwardJob | CallJob] = []  # taken from the queue, not answered yet
        self.ready_event = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-worker", daemon=True)

    # --- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread: it loads the model, then serves the queue."""
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ask the worker to stop and wait up to `timeout_s` for its thread; waiting jobs get a 503."""
        self._stop.set()
        self._thread.join(timeout_s)

    def check_ready(self) -> None:
        """Raise the 503 a model route should answer while the model is loading or unavailable."""
        if self.state == "failed":
            raise Unavailable(self.error)
        if self._stop.is_set():
            raise Unavailable("the service is shutting down")
        if self.state != "ready":
            raise Unavailable("the model is still loading; retry shortly", retry_after_s=RETRY_AFTER_LOADING_S)

    def ready_detector(self) -> Detector:
        """The detector, once ready (the Unavailable of `check_ready` before)."""
        self.check_ready()
        assert self.detector is not None, "a ready worker has a detector"
        return self.detector

    # --- admission and submitting ----------------------------------------------------------------------------

    def check_admission(self) -> None:
        """Raise the 503 or 429 a model request gets before its body is read or decoded."""
        self.check_ready()
        if self.queue.qsize() + self._incoming >= self.queue.maxsize:
            raise self._full()

    def admit(self) -> Ticket:
        """A ticket for a request about to decode its images and submit (503/429 when it would be refused)."""
        with self._lock:
            self.check_admission()
            self._incoming += 1
            return Ticket(self)

    @property
    def incoming(self) -> int:
        """Admitted requests still decoding (not yet submitted)."""
        return self._incoming

    def submit_forward(self, refs: ReferenceSet, batch: PreparedBatch, ticket: Ticket | None = None) -> Future:
        """Future of a Forwarded for prepared frames of one product version (`refs`)."""
        return self._submit(ForwardJob(refs, batch), ticket)

    def submit_call(self, function: Callable[[Detector], Any], stage: str, ticket: Ticket | None = None) -> Future:
        """Future of `function(detector)`, run alone on the worker thread; its time goes to `stage`."""
        return self._submit(CallJob(function, stage), ticket)

    async def result(self, future: Future) -> Any:
        """The job's result, waited for at most `timeout_s` (504 after, and the job is cancelled if queued)."""
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout_s)
        except TimeoutError:
            future.cancel()
            raise ModelTimeout(
                f"the model did not answer within {self.timeout_s:g} s (DCPSFR_WORKER_TIMEOUT_S); retry later"
            ) from None

    def _submit(self, job: ForwardJob | CallJob, ticket: Ticket | None) -> Future:
        if ticket is not None:
            ticket.release()  # from here on the job is counted by the queue
        self.check_ready()
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            raise self._full() from None
        if self.state == "failed":  # the worker failed while we queued: nobody will take the job
            self._fail_waiting(Unavailable(self.error))
        return job.future

    def _full(self) -> Overloaded:
        return Overloaded(
            f"the model queue is full ({self.queue.maxsize} requests waiting or decoding); retry shortly",
            retry_after_s=RETRY_AFTER_FULL_S,
        )

    # --- the thread ------------------------------------------------------------------------------------------

    def _run(self) -> None:
        if not self._start_model():
            self._fail_waiting(Unavailable(self.error))
            return
        try:
            self._serve()
        except Exception as err:  # a fault outside a forward: fail loudly, never leave a request waiting
            log.exception("the model worker stopped on an unexpected error")
            self._fail(f"the model worker failed: {type(err).__name__}: {err}; restart the service")
            for job in self._held:
                if not job.future.done():
                    job.future.set_exception(Unavailable(self.error))
        finally:
            self._held = []
            self._fail_waiting(Unavailable(self.error or "the service is shutting down"))

    def _serve(self) -> None:
        pending: ForwardJob | CallJob | None = None
        while not self._stop.is_set():
            job = pending or self._next(POLL_S)
            pending = None
            if job is None or not job.future.set_running_or_notify_cancel():
                continue  # idle, or the client went away before we started
            self._held = [job]
            if isinstance(job, CallJob):
                self._run_call(job)
                continue
            batch, pending = self._collect(job)
            self._run_batch(batch)
            self._held = []

    def _start_model(self) -> bool:
        try:
            self.detector = self.build_detector()
            self.setup(self.detector)
            self._warm_up(self.detector)
        except WeightsMissingError as err:
            self._fail(f"model weights missing: {err}")
            return False
        except ConfigError as err:
            self._fail(f"model configuration error: {err}")
            return False
        except StoreUnavailable as err:  # opened again once the model is built (service.app.publish_model)
            self._fail(str(err))
            return False
        except Exception as err:
            log.exception("the model could not be loaded")
            self._fail(f"the model could not be loaded: {type(err).__name__}: {err}")
            return False
        self.state = "ready"
        self.ready_event.set()
        log.info("model ready: %r", self.detector)
        return True

    def _fail(self, message: str) -> None:
        log.error("%s", message)
        self.error = message
        self.state = "failed"
        self.ready_event.set()

    @staticmethod
    def _warm_up(detector: Detector) -> None:
        """One fit and one batched predict on noise, so the first real request pays no first-call costs."""
        size = detector.config.dino.image_size
        rng = np.random.default_rng(0)
        noise = [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(3)]
        detector.predict(noise[1:], detector.fit_references(noise[:1]))

    def _next(self, timeout_s: float) -> ForwardJob | CallJob | None:
        try:
            return self.queue.get(timeout=timeout_s) if timeout_s > 0 else self.queue.get_nowait()
        except queue.Empty:
            return None

    def _collect(self, first: ForwardJob) -> tuple[list[ForwardJob], CallJob | None]:
        """The predict jobs queued now, up to a full batch; waits (at most `max_wait_ms`) only while admitted
        requests are still decoding. A call job ends the batch."""
        batch, n_images = [first], len(first.batch)
        deadline = time.perf_counter() + self.max_wait_s
        while n_images < self.max_batch_size:
            job = self._next(0)
            if job is None and self._incoming > 0:
                job = self._next(deadline - time.perf_counter())
            if job is None:
                break
            if isinstance(job, CallJob):
                self._held.append(job)  # taken from the queue: failed with the batch if the loop faults
                return batch, job
            if job.future.set_running_or_notify_cancel():
                batch.append(job)
                self._held.append(job)
                n_images += len(job.batch)
        return batch, None

    def _run_call(self, job: CallJob) -> None:
        start = time.perf_counter()
        try:
            job.future.set_result(job.function(self.detector))
        except Exception as err:
            job.future.set_exception(err)
        self.metrics.stage_duration.labels(job.stage).observe(time.perf_counter() - start)

    def _run_batch(self, jobs: list[ForwardJob]) -> None:
        groups: dict[int, list[tuple[ForwardJob, int]]] = {}  # one group per product version
        for job in jobs:
            groups.setdefault(id(job.refs), []).extend((job, i) for i in range(len(job.batch)))
        failed: dict[int, Exception] = {}
        for items in groups.values():
            for start in range(0, len(items), self.max_batch_size):
                failed.update(self._forward(items[start : start + self.max_batch_size]))
        for job in jobs:
            if id(job) in failed:
                job.future.set_exception(failed[id(job)])
            else:
                job.future.set_result(job.result())

    def _forward(self, chunk: list[tuple[ForwardJob, int]]) -> dict[int, Exception]:
        """Forward one chunk of frames; the errors by job id. When a chunk of several jobs fails, each job is
        forwarded again on its own, so one bad frame fails only its own request. The error is not logged here:
        its request's 500 handler logs it once, with the route."""
        try:
            self._run_forward(chunk)
            return {}
        except Exception as err:
            jobs = list({id(job): job for job, _ in chunk})
            if len(jobs) == 1:
                return {jobs[0]: err}
            log.warning(
                "forward failed for a batch of %d requests (%s: %s); each is forwarded again on its own",
                len(jobs),
                type(err).__name__,
                err,
            )
        failed: dict[int, Exception] = {}
        for job_id in jobs:
            failed.update(self._forward([item for item in chunk if id(item[0]) == job_id]))
        return failed

    def _run_forward(self, chunk: list[tuple[ForwardJob, int]]) -> None:
        start = time.perf_counter()
        for job, _ in chunk:
            job.started = job.started or start
        frames = PreparedBatch(tuple(job.batch.frames[i] for job, i in chunk))
        scores = self.detector.forward(frames, chunk[0][0].refs)
        elapsed = time.perf_counter() - start
        self.metrics.stage_duration.labels("predict").observe(elapsed)
        self.metrics.batch_size.observe(len(chunk))
        by_job: dict[int, list[int]] = {}
        for position, (job, _) in enumerate(chunk):
            by_job.setdefault(id(job), []).append(position)
        for job in {id(job): job for job, _ in chunk}.values():
            job.predict_ms += elapsed * 1000.0
            positions = by_job[id(job)]
            job.parts.append(scores.sliced(positions[0], positions[-1] + 1))  # a job's frames are contiguous

    def _fail_waiting(self, error: Exception) -> None:
        while (job := self._next(0)) is not None:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(error)
