"""create_app(settings): the FastAPI app with its store, engine, workflows, metrics and middleware. Nothing is built at
import time, so tests can make apps with their own settings (and their own detector: `build_detector`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from functools import partial
from pathlib import Path

import sqlalchemy
import torch
from fastapi import FastAPI

from model import ConfigError, Detector, ReferenceSet, create_detector, feature_fingerprint, load_config
from service.api.dependencies import Services
from service.api.errors import install_error_handlers
from service.api.lifecycle import DrainMiddleware
from service.api.middleware import AdmissionMiddleware, ApiKeyMiddleware, BodyLimitMiddleware, RequestMetricsMiddleware
from service.api.openapi import install_openapi
from service.api.routes import audit, console, health, inspect, inspections, products, reports, rules
from service.decisions.results import RegionLimits, mode_label
from service.decisions.thresholds import CalibrationPolicy
from service.engine.download import WeightsDownload
from service.engine.pipeline import Engine
from service.engine.worker import ModelWorker
from service.imaging.decode import configure_decoding
from service.keys import LEGACY_WARNING, ApiKey, configured_keys
from service.metrics import Metrics
from service.products.collector import BlobCollector
from service.products.frames import FrameStore
from service.products.importer import folder_importer
from service.products.store import ProductStore, StoreUnavailable
from service.products.workflows import Limits, Workflows
from service.records.archive import FrameArchive, RetentionPolicy
from service.records.blobs import BlobStore
from service.records.changes import ChangeFeed
from service.records.database import database_url, open_database
from service.records.recorder import Recorder, RecorderSettings
from service.records.review import ReviewPolicy
from service.settings import Settings

log = logging.getLogger(__name__)

RANDOM_INIT_WARNING = (
    "DCPSFR_RANDOM_INIT=true: the model runs with RANDOM WEIGHTS. Scores, verdicts and masks mean NOTHING; "
    "use this only to measure speed. Every response's `mode` says '(random weights)'."
)

DetectorFactory = Callable[[Settings], Detector]


def create_app(
    settings: Settings | None = None, build: DetectorFactory | None = None, download: WeightsDownload | None = None
) -> FastAPI:
    """Build the FastAPI app: store, change feed, model worker, engine, workflows, routers and middleware; the store
    opens and the model loads at start-up (lifespan), not here. `build` makes the detector (default:
    `build_detector`, the one the settings describe); with `download`, the worker first fetches the missing weight
    files (`--fetch-weights`), and /readyz reports its progress."""
    settings = settings or Settings()
    build = build or build_detector
    if download is not None:
        build = partial(download.fetched_then_built, build)
    metrics = Metrics(per_product=settings.metrics_per_product, max_products=settings.metrics_max_products)
    url = database_url(settings.database_url, settings.data_dir)
    database = open_database(url)  # one engine for the records and the product registry
    store = ProductStore(database, BlobStore(settings.blobs_dir), folder_importer(settings.data_dir))
    sync = StoreSync(
        store,
        ChangeFeed(url, store.refresh_one_or_all, settings.store_poll_s),
        BlobCollector(store, settings.blob_grace_s, settings.blob_grace_s / 2),
    )
    worker = ModelWorker(
        build_detector=partial(build, settings),
        setup=partial(publish_model, store, sync, metrics, settings),
        metrics=metrics,
        max_batch_size=settings.max_batch_size,
        max_wait_ms=settings.max_wait_ms,
        queue_size=settings.queue_size,
        timeout_s=settings.worker_timeout_s,
    )
    metrics.watch(queue_depth=worker.queue.qsize, gpu_memory=partial(gpu_memory_allocated, worker))
    configure_decoding(settings.max_upload_bytes)
    engine = Engine(worker, settings.max_pixels, settings.max_request_pixels, settings.decode_concurrency, metrics)
    recorder = build_recorder(settings, database)
    workflows = Workflows(
        store,
        FrameStore(store, settings.calibration_max_frames, settings.feedback_max_frames),
        engine,
        recorder,
        metrics,
        CalibrationPolicy(settings.target_false_alarm_rate, settings.calibration_min_frames),
        Limits(
            max_references=settings.max_references,
            max_images_per_request=settings.max_images_per_request,
            calibration_max_frames=settings.calibration_max_frames,
            feedback_max_frames=settings.feedback_max_frames,
            max_pixels=settings.max_pixels,
        ),
        RegionLimits(settings.min_region_area_px, settings.max_regions_listed),
        thumbnails=settings.history_thumbnails,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:  # products need no model: they list, show, delete and take thresholds while it loads or is down
            open_store(store, sync, metrics, settings)
        except StoreUnavailable as err:
            log.error("%s; retried when the model is loaded", err)
        except Exception:
            log.exception("the product store could not be opened; retried when the model is loaded")
        recorder.start()  # the database is migrated here (or retried by its thread while it does not answer)
        worker.start()  # loads the model in its own thread; /healthz answers meanwhile
        yield
        sync.stop()
        worker.stop()
        engine.shutdown()
        recorder.stop()

    app = FastAPI(
        title="DCP-SFR inspection service",
        description="Few-shot industrial anomaly detection: upload good parts per product, inspect camera frames.",
        version="0.1.0",
        lifespan=lifespan,
    )
    keys = api_keys(settings)
    app.state.services = Services(
        settings=settings,
        store=store,
        worker=worker,
        workflows=workflows,
        metrics=metrics,
        recorder=recorder,
        keys=tuple(keys),
        download=download,
    )
    metrics.in_flight.set_function(lambda: app.state.services.lifecycle.in_flight)
    install_error_handlers(app)
    install_openapi(app, settings)
    routers = (
        health.router,
        products.router,
        rules.router,
        inspect.router,
        inspections.router,
        audit.router,
        reports.router,
    )
    for router in (*routers, console.router):
        app.include_router(router)
    app.add_middleware(AdmissionMiddleware, check=worker.check_admission)  # innermost
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes)
    if keys:
        app.add_middleware(ApiKeyMiddleware, keys=keys)
    app.add_middleware(DrainMiddleware, lifecycle=app.state.services.lifecycle)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)  # added last: the outermost
    return app


def api_keys(settings: Settings) -> list[ApiKey]:
    """The keys file's and DCPSFR_API_KEYS' keys (the latter deprecated: warned); raises KeysFileError."""
    if settings.api_key_list:
        log.warning(LEGACY_WARNING)
    return configured_keys(settings.keys_file, settings.api_key_list)


class StoreSync:
    """The product store's background threads: one that loads every stored product (so the service is ready before
    they all are; a request for one not loaded yet loads it), the change feed (other replicas' changes) and the blob
    garbage collector."""

    def __init__(self, store: ProductStore, feed: ChangeFeed, collector: BlobCollector) -> None:
        self.store = store
        self.feed = feed
        self.collector = collector

    def start(self) -> None:
        """Start the three."""
        threading.Thread(target=self.store.refresh_one_or_all, args=(None,), name="store-load", daemon=True).start()
        self.feed.start()
        self.collector.start()

    def stop(self) -> None:
        """Stop the change feed and the collector."""
        self.feed.stop()
        self.collector.stop()


def build_recorder(settings: Settings, database: sqlalchemy.Engine) -> Recorder:
    """The inspection records' writer on `database` (the one the settings name, SQLite in the data dir by
    default), the spool and the frame archive in DATA_DIR/records, the default retention and review policies.
    Nothing connects or starts yet."""
    folder = settings.records_dir
    policy = RetentionPolicy(settings.archive_keep_ng, settings.archive_keep_ok_every, settings.archive_days)
    review = ReviewPolicy(settings.review_band, settings.review_all_ng)
    return Recorder(
        database,
        folder / "spool",
        FrameArchive(folder / "frames"),
        RecorderSettings(
            settings.records_flush_s, policy, settings.archive_max_bytes, settings.archive_prune_s, review
        ),
    )


def build_detector(settings: Settings) -> Detector:
    """The detector the settings describe (config, weights, device, runtime, compile mode, device cache), in one
    call; warns loudly with random weights."""
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
        device_cache_bytes=settings.device_cache_bytes,
    )


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
    with suppress(OSError):  # the SQLite database's folder (the records spool makes it too)
        settings.records_dir.mkdir(parents=True, exist_ok=True)
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
