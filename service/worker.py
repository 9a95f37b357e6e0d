"""The model worker: one thread owns the detector (not thread-safe) and serves a bounded queue.

Start-up (in the thread, so the HTTP server answers /healthz meanwhile): build the detector, run `setup`
(load stored products), warm up, then state "ready". Predict requests are batched: the worker takes the
first waiting request, then keeps taking requests for up to `max_wait_ms` or until `max_batch_size` images,
groups them by product version and runs one `detector.predict` per group (chunks of `max_batch_size`).
Calls (fit + calibrate) run alone, in queue order. A full queue is answered at once with 429.
"""

from __future__ import annotations

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

from model import ConfigError, Detector, Prediction, WeightsMissingError
from service.errors import Overloaded, Unavailable
from service.metrics import Metrics
from service.store import Product

log = logging.getLogger(__name__)

POLL_S = 0.1  # how often an idle worker checks for shutdown
RETRY_AFTER_FULL_S = 1
RETRY_AFTER_LOADING_S = 5


@dataclass
class BatchResult:
    predictions: list[Prediction]
    queue_ms: float  # enqueue -> the worker starts this request's first forward
    predict_ms: float  # wall time of the forwards that contained this request's images


@dataclass
class PredictJob:
    product: Product
    images: list[Image.Image]
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.perf_counter)
    predictions: list[Prediction | None] = field(default_factory=list)
    started: float | None = None
    predict_ms: float = 0.0

    def result(self) -> BatchResult:
        return BatchResult(self.predictions, (self.started - self.enqueued) * 1000.0, self.predict_ms)


@dataclass
class CallJob:
    function: Callable[[Detector], Any]
    stage: str
    future: Future = field(default_factory=Future)


class ModelWorker:
    def __init__(
        self,
        build_detector: Callable[[], Detector],
        setup: Callable[[Detector], None],
        metrics: Metrics,
        max_batch_size: int,
        max_wait_ms: float,
        queue_size: int,
    ) -> None:
        self.build_detector = build_detector
        self.setup = setup
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.queue: queue.Queue[PredictJob | CallJob] = queue.Queue(maxsize=queue_size)
        self.detector: Detector | None = None
        self.state = "loading"  # -> "ready" | "failed"
        self.error = ""
        self.ready_event = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-worker", daemon=True)

    # --- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def check_ready(self) -> None:
        """Raise the 503 a model route should answer while the model is loading or unavailable."""
        if self.state == "failed":
            raise Unavailable(self.error)
        if self._stop.is_set():
            raise Unavailable("the service is shutting down")
        if self.state != "ready":
            raise Unavailable(
                "the model is still loading; retry shortly", headers={"Retry-After": str(RETRY_AFTER_LOADING_S)}
            )

    # --- submitting ------------------------------------------------------------------------------------------

    def submit_predict(self, product: Product, images: list[Image.Image]) -> Future:
        """Future of a BatchResult for these images of one product."""
        return self._submit(PredictJob(product, images))

    def submit_call(self, function: Callable[[Detector], Any], stage: str) -> Future:
        """Future of `function(detector)`, run alone on the worker thread; its time goes to `stage`."""
        return self._submit(CallJob(function, stage))

    def _submit(self, job: PredictJob | CallJob) -> Future:
        self.check_ready()
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            raise Overloaded(
                f"the model queue is full ({self.queue.maxsize} requests waiting); retry shortly",
                headers={"Retry-After": str(RETRY_AFTER_FULL_S)},
            ) from None
        return job.future

    # --- the thread ------------------------------------------------------------------------------------------

    def _run(self) -> None:
        if not self._start_model():
            return
        pending: PredictJob | CallJob | None = None
        while not self._stop.is_set():
            job = pending or self._next(POLL_S)
            pending = None
            if job is None or not job.future.set_running_or_notify_cancel():
                continue  # idle, or the client went away before we started
            if isinstance(job, CallJob):
                self._run_call(job)
                continue
            batch, pending = self._collect(job)
            self._run_batch(batch)
        self._fail_waiting(Unavailable("the service is shutting down"))

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

    def _next(self, timeout_s: float) -> PredictJob | CallJob | None:
        try:
            return self.queue.get(timeout=timeout_s) if timeout_s > 0 else self.queue.get_nowait()
        except queue.Empty:
            return None

    def _collect(self, first: PredictJob) -> tuple[list[PredictJob], CallJob | None]:
        """More predict jobs until the batch is full or the wait is over; a call job ends the batch."""
        batch, n_images = [first], len(first.images)
        deadline = time.perf_counter() + self.max_wait_s
        while n_images < self.max_batch_size:
            job = self._next(deadline - time.perf_counter())
            if job is None:
                break
            if isinstance(job, CallJob):
                return batch, job
            if job.future.set_running_or_notify_cancel():
                batch.append(job)
                n_images += len(job.images)
        return batch, None

    def _run_call(self, job: CallJob) -> None:
        start = time.perf_counter()
        try:
            job.future.set_result(job.function(self.detector))
        except Exception as err:
            job.future.set_exception(err)
        self.metrics.stage_duration.labels(job.stage).observe(time.perf_counter() - start)

    def _run_batch(self, jobs: list[PredictJob]) -> None:
        groups: dict[int, list[tuple[PredictJob, int]]] = {}  # one group per product version
        for job in jobs:
            job.predictions = [None] * len(job.images)
            groups.setdefault(id(job.product.refs), []).extend((job, i) for i in range(len(job.images)))
        failed: dict[int, Exception] = {}
        for items in groups.values():
            for start in range(0, len(items), self.max_batch_size):
                chunk = items[start : start + self.max_batch_size]
                error = self._forward(chunk)
                if error is not None:
                    failed.update({id(job): error for job, _ in chunk})
        for job in jobs:
            if id(job) in failed:
                job.future.set_exception(failed[id(job)])
            else:
                job.future.set_result(job.result())

    def _forward(self, chunk: list[tuple[PredictJob, int]]) -> Exception | None:
        start = time.perf_counter()
        for job, _ in chunk:
            job.started = job.started or start
        try:
            predictions = self.detector.predict([job.images[i] for job, i in chunk], chunk[0][0].product.refs)
        except Exception as err:
            log.exception("predict failed for a batch of %d images", len(chunk))
            return err
        elapsed = time.perf_counter() - start
        self.metrics.stage_duration.labels("predict").observe(elapsed)
        self.metrics.batch_size.observe(len(chunk))
        for job in {id(job): job for job, _ in chunk}.values():
            job.predict_ms += elapsed * 1000.0
        for (job, i), prediction in zip(chunk, predictions, strict=True):
            job.predictions[i] = prediction
        return None

    def _fail_waiting(self, error: Exception) -> None:
        while (job := self._next(0)) is not None:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(error)
