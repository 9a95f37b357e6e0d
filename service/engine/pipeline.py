"""The inspection pipeline's threads: decode and prepare in the decode pool, the forward pass on the model worker,
maps (and whatever the caller finishes each result with: regions, PNGs) in the encode pool.

Uploads are checked before any pixel is decoded: every header is read (format, size) and the request's total pixel
count checked against `max_request_pixels`, which bounds the memory one request takes. The pools bound the
CPU-heavy image work running at once over all requests. Errors are domain errors (service.errors); nothing here
knows HTTP, so the pipeline runs in tests without FastAPI.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from model import Detector, Frame, Prediction, PreparedBatch, ReferenceSet
from service.engine.worker import Forwarded, ModelWorker, Ticket
from service.errors import TooLarge
from service.imaging.decode import OpenedImage, decode_opened, open_image
from service.metrics import Metrics

T = TypeVar("T")


class Upload(NamedTuple):
    """One uploaded file: how errors name it (`images[0] (a.png)`), its bytes, and its file name if it had one."""

    name: str
    data: bytes
    filename: str | None = None


@dataclass(frozen=True)
class Decoded:
    """A request's decoded frames and each one's decode time (ms)."""

    frames: list[Frame]
    decode_ms: list[float]


@dataclass(frozen=True)
class Predicted:
    """A request's results (one per frame, what `finish` made of each prediction) and its time on the model."""

    results: list[Any]
    queue_ms: float  # enqueue -> the model worker started this request's first forward
    predict_ms: float  # wall time of the forwards that contained this request's frames


class Engine:
    """Decode pool, model worker and encode pool behind two calls: `decode` and `predict` (plus `call` for work
    that needs the whole model, such as fitting references)."""

    def __init__(
        self, worker: ModelWorker, max_pixels: int, max_request_pixels: int, concurrency: int, metrics: Metrics
    ) -> None:
        self.worker = worker
        self.max_pixels = max_pixels
        self.max_request_pixels = max_request_pixels
        self.metrics = metrics
        self.decode_pool = ThreadPoolExecutor(concurrency, thread_name_prefix="decode")
        self.encode_pool = ThreadPoolExecutor(concurrency, thread_name_prefix="encode")

    def shutdown(self) -> None:
        """Stop the pools (work already in them finishes)."""
        self.decode_pool.shutdown(wait=False, cancel_futures=True)
        self.encode_pool.shutdown(wait=False, cancel_futures=True)

    async def decode(self, uploads: Sequence[Upload]) -> Decoded:
        """Decoded frames (TooLarge, UnsupportedImage or BadImage say what is wrong with which upload)."""
        if len(uploads) == 1:  # one hop to the pool instead of two
            return await self._run(self.decode_pool, self._decode_all, uploads)
        opened = await self._run(self.decode_pool, self._open_all, uploads)
        results = await asyncio.gather(
            *(self._run(self.decode_pool, self._decode_one, o, u.name) for o, u in zip(opened, uploads, strict=True))
        )
        return Decoded([frame for frame, _ in results], [ms for _, ms in results])

    async def predict(
        self,
        refs: ReferenceSet,
        frames: Sequence[Frame],
        ticket: Ticket | None = None,
        finish: Callable[[Prediction, int], T] | None = None,
    ) -> Predicted:
        """Predictions of one product version's frames: prepare (decode pool), forward (model worker, batched with
        other requests), maps then `finish(prediction, index)` per frame (encode pool). Unavailable, Overloaded or
        ModelTimeout when the worker cannot answer; ValueError for grey data with no true 8- or 16-bit reading."""
        detector = self.worker.ready_detector()
        try:
            batch = await self._run(self.decode_pool, detector.prepare, frames, refs)
        except BaseException:
            if ticket is not None:
                ticket.release()  # no job is coming after all
            raise
        forwarded: Forwarded = await self.worker.result(self.worker.submit_forward(refs, batch, ticket))
        jobs = [
            self._run(self.encode_pool, self._maps_one, detector, batch, forwarded, i, finish)
            for i in range(len(batch))
        ]
        return Predicted(list(await asyncio.gather(*jobs)), forwarded.queue_ms, forwarded.predict_ms)

    async def call(self, function: Callable[[Detector], T], stage: str) -> T:
        """`function(detector)` alone on the model worker (fit + calibrate); its time observed as `stage`."""
        return await self.worker.result(self.worker.submit_call(function, stage))

    def _decode_all(self, uploads: Sequence[Upload]) -> Decoded:
        results = [self._decode_one(o, u.name) for o, u in zip(self._open_all(uploads), uploads, strict=True)]
        return Decoded([frame for frame, _ in results], [ms for _, ms in results])

    def _open_all(self, uploads: Sequence[Upload]) -> list[OpenedImage]:
        opened = [open_image(u.data, u.name, self.max_pixels) for u in uploads]
        total = sum(o.image.width * o.image.height for o in opened)
        if total > self.max_request_pixels:
            raise TooLarge(
                f"{len(opened)} images with {total} pixels in all, more than the per-request limit of "
                f"{self.max_request_pixels} (DCPSFR_MAX_REQUEST_PIXELS): send fewer or smaller images per request"
            )
        return opened

    def _decode_one(self, image: OpenedImage, name: str) -> tuple[Frame, float]:
        start = time.perf_counter()
        frame = decode_opened(image, name)
        elapsed = time.perf_counter() - start
        self.metrics.stage_duration.labels("decode").observe(elapsed)
        return frame, elapsed * 1000.0

    def _maps_one(
        self,
        detector: Detector,
        batch: PreparedBatch,
        forwarded: Forwarded,
        index: int,
        finish: Callable[[Prediction, int], T] | None,
    ) -> T | Prediction:
        start = time.perf_counter()
        [prediction] = detector.maps(batch.sliced(index, index + 1), forwarded.scores.sliced(index, index + 1))
        result = prediction if finish is None else finish(prediction, index)
        self.metrics.stage_duration.labels("encode").observe(time.perf_counter() - start)
        return result

    @staticmethod
    async def _run(pool: ThreadPoolExecutor, function: Callable[..., T], *args: Any) -> T:
        future: Future = pool.submit(function, *args)
        return await asyncio.wrap_future(future)
