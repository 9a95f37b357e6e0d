"""create_app(settings): the FastAPI app with its store, model worker, metrics and middleware. Nothing is
built at import time, so tests can make apps with their own settings."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import torch
from fastapi import FastAPI

from model import ConfigError, Detector, ReferenceSet, create_detector, load_config
from model.detector import feature_fingerprint
from model.device_cache import DeviceCache
from service.dependencies import Services
from service.errors import install_error_handlers
from service.feedback import FrameStore
from service.history import InspectionHistory
from service.lifecycle import DrainMiddleware
from service.metrics import Metrics
from service.middleware import AdmissionMiddleware, ApiKeyMiddleware, BodyLimitMiddleware, RequestMetricsMiddleware
from service.results import mode_label
from service.routes import console, health, inspect, products, rules
from service.settings import Settings
from service.store import ProductStore, StoreUnavailable
from service.sync import StoreSync
from service.uploads import UploadDecoder
from service.worker import ModelWorker

log = logging.getLogger(__name__)

RANDOM_INIT_WARNING = (
    "DCPSFR_RANDOM_INIT=true: the model runs with RANDOM WEIGHTS. Scores, verdicts and masks mean NOTHING; "
    "use this only to measure speed. Every response's `mode` says '(random weights)'."
)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the FastAPI app: store, store sync, model worker, metrics, decoder, routers and middleware; the store opens
    and the model loads at start-up (lifespan), not here."""
    settings = settings or Settings()
    metrics = Metrics(per_product=settings.metrics_per_product, max_products=settings.metrics_max_products)
    store = ProductStore(settings.products_dir)
    sync = StoreSync(store, settings.store_poll_s)
    worker = ModelWorker(
        build_detector=partial(build_detector, settings),
        setup=partial(publish_model, store, sync, metrics, settings),
        metrics=metrics,
        max_batch_size=settings.max_batch_size,
        max_wait_ms=settings.max_wait_ms,
        queue_size=settings.queue_size,
        timeout_s=settings.worker_timeout_s,
    )
    metrics.watch(queue_depth=worker.queue.qsize, gpu_memory=partial(gpu_memory_allocated, worker))
    decoder = UploadDecoder(settings.max_pixels, settings.max_request_pixels, settings.decode_concurrency, metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:  # products need no model: they list, show, delete and take thresholds while it loads or is down
            open_store(store, sync, metrics, settings)
        except StoreUnavailable as err:
            log.error("%s; retried when the model is loaded", err)
        except Exception:
            log.exception("the product store could not be opened; retried when the model is loaded")
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
        decoder=decoder,
        history=InspectionHistory(settings.history_size),
        frames=FrameStore(store, settings.calibration_max_frames, settings.feedback_max_frames),
    )
    metrics.in_flight.set_function(lambda: app.state.services.lifecycle.in_flight)
    install_error_handlers(app)
    for router in (health.router, products.router, rules.router, inspect.router, console.router):
        app.include_router(router)
    app.add_middleware(AdmissionMiddleware, check=worker.check_admission, is_model_route=is_model_route)  # innermost
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes)
    if settings.api_key_list:
        app.add_middleware(ApiKeyMiddleware, keys=settings.api_key_list)
    app.add_middleware(DrainMiddleware, lifecycle=app.state.services.lifecycle)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)  # added last: the outermost
    return app


def build_detector(settings: Settings) -> Detector:
    """The detector the settings describe (config, weights, device, runtime, compile mode) with its device cache; warns
    loudly with random weights."""
    if settings.random_init:
        log.warning(RANDOM_INIT_WARNING)
    detector = create_detector(
        settings.model_config_name,
        weights_dir=settings.weights_dir,
        device=settings.device,
        random_init=settings.random_init,
        runtime=settings.runtime,
        runtime_cache_dir=settings.runtime_cache_dir,
        compile_mode=settings.compile,
    )
    detector.device_cache = DeviceCache(settings.device_cache_bytes)
    return detector


def is_model_route(path: str) -> bool:
    """POST routes that queue work on the model worker (admission refuses them before reading the body)."""
    return path == "/inspect" or path.endswith("/references")


def reference_loader(settings: Settings) -> Callable[[Path], ReferenceSet]:
    """Loads saved references checked against the configured detector's feature fingerprint, without building
    the detector (so products load while the model loads, or when it cannot)."""
    try:
        config = load_config(settings.model_config_name)
    except ConfigError:
        return ReferenceSet.load  # the model will not load either; products can still be listed and deleted
    fingerprint = feature_fingerprint(config, config.random_weights or settings.random_init)

    def load(folder: Path) -> ReferenceSet:
        refs = ReferenceSet.load(folder)
        refs.check_compatible(config.name, fingerprint)
        return refs

    return load


def open_store(store: ProductStore, sync: StoreSync, metrics: Metrics, settings: Settings) -> None:
    """Open the store once; products load in the background (and on demand)."""
    if store.is_open:
        return
    store.open(reference_loader(settings))
    store.add_listener(lambda *_: metrics.products.set(len(store)))
    sync.start()


def publish_model(
    store: ProductStore, sync: StoreSync, metrics: Metrics, settings: Settings, detector: Detector
) -> None:
    """Start-up, on the model worker: the store is open (opened again here if that failed), the model published."""
    open_store(store, sync, metrics, settings)
    mode = mode_label(detector.mode, detector.random_weights)
    metrics.model_info.labels(detector.config.name, mode, str(detector.device)).set(1)


def gpu_memory_allocated(worker: ModelWorker) -> float:
    """CUDA memory allocated by the worker's detector, in bytes (0 while loading or off CUDA)."""
    detector = worker.detector
    if detector is None or detector.device.type != "cuda":
        return 0.0
    return float(torch.cuda.memory_allocated(detector.device))
