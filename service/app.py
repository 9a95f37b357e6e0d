"""create_app(settings): the FastAPI app with its store, model worker, metrics and middleware. Nothing is
built at import time, so tests can make apps with their own settings."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import torch
from fastapi import FastAPI

from model import Detector, create_detector
from service.dependencies import Services
from service.errors import install_error_handlers
from service.feedback import FrameStore
from service.history import InspectionHistory
from service.lifecycle import DrainMiddleware
from service.metrics import Metrics
from service.middleware import ApiKeyMiddleware, BodyLimitMiddleware, RequestMetricsMiddleware
from service.results import mode_label
from service.routes import console, health, inspect, products, rules
from service.settings import Settings
from service.store import ProductStore
from service.sync import StoreSync
from service.worker import ModelWorker

log = logging.getLogger(__name__)

RANDOM_INIT_WARNING = (
    "DCPSFR_RANDOM_INIT=true: the model runs with RANDOM WEIGHTS. Scores, verdicts and masks mean NOTHING; "
    "use this only to measure speed. Every response's `mode` says '(random weights)'."
)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics(per_product=settings.metrics_per_product, max_products=settings.metrics_max_products)
    store = ProductStore(settings.products_dir)
    sync = StoreSync(store, settings.store_poll_s)
    worker = ModelWorker(
        build_detector=partial(build_detector, settings),
        setup=partial(open_store, store, sync, metrics),
        metrics=metrics,
        max_batch_size=settings.max_batch_size,
        max_wait_ms=settings.max_wait_ms,
        queue_size=settings.queue_size,
    )
    metrics.watch(queue_depth=worker.queue.qsize, gpu_memory=partial(gpu_memory_allocated, worker))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        worker.start()  # loads the model in its own thread; /healthz answers meanwhile
        yield
        sync.stop()
        worker.stop()

    app = FastAPI(
        title="DCP-SFR inspection service",
        description="Few-shot industrial anomaly detection: upload good parts per product, inspect camera frames.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.services = Services(
        settings=settings,
        store=store,
        worker=worker,
        metrics=metrics,
        history=InspectionHistory(settings.history_size),
        frames=FrameStore(store, settings.calibration_max_frames, settings.feedback_max_frames),
    )
    metrics.in_flight.set_function(lambda: app.state.services.lifecycle.in_flight)
    install_error_handlers(app)
    for router in (health.router, products.router, rules.router, inspect.router, console.router):
        app.include_router(router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes)  # the innermost
    if settings.api_key_list:
        app.add_middleware(ApiKeyMiddleware, keys=settings.api_key_list)
    app.add_middleware(DrainMiddleware, lifecycle=app.state.services.lifecycle)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)  # added last: the outermost
    return app


def build_detector(settings: Settings) -> Detector:
    if settings.random_init:
        log.warning(RANDOM_INIT_WARNING)
    return create_detector(
        settings.model_config_name,
        weights_dir=settings.weights_dir,
        device=settings.device,
        random_init=settings.random_init,
        runtime=settings.runtime,
        runtime_cache_dir=settings.runtime_cache_dir,
        compile_mode=settings.compile,
    )


def open_store(store: ProductStore, sync: StoreSync, metrics: Metrics, detector: Detector) -> None:
    """Start-up, on the model worker: open the store; products load in the background (and on demand)."""
    store.open(detector.load_references)
    store.add_listener(lambda *_: metrics.products.set(len(store)))
    sync.start()
    mode = mode_label(detector.mode, detector.random_weights)
    metrics.model_info.labels(detector.config.name, mode, str(detector.device)).set(1)


def gpu_memory_allocated(worker: ModelWorker) -> float:
    detector = worker.detector
    if detector is None or detector.device.type != "cuda":
        return 0.0
    return float(torch.cuda.memory_allocated(detector.device))
