"""Prometheus metrics, one registry per app (so tests can build many apps). Names are a public contract:
the Grafana dashboards use exactly these."""

from __future__ import annotations

import math
from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from model import NOTICE_KINDS
from service.decisions.rules import ALL_RULE_NAMES

REGION_BUCKETS = (0, 1, 2, 3, 5, 10, 20, 50, 100)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
STAGES = ("decode", "predict", "encode", "fit")
VERDICTS = ("good", "anomalous")
# the relative score: 0 = the product's median normal calibration value, 1 = its threshold (any score scale)
RELATIVE_SCORE_BUCKETS = (-1.0, -0.5, 0.0, 0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 4.0, 8.0)
OTHER_PRODUCTS = "other"


class Metrics:
    """The app's Prometheus metrics in their own registry (names are a public contract, see the module docstring)."""

    def __init__(self, per_product: bool = False, max_products: int = 50) -> None:
        self.per_product = per_product
        self.max_products = max_products
        self._labelled_products: set[str] = set()
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.http_duration = Histogram(
            "dcpsfr_http_request_duration_seconds",
            "HTTP request latency by route template, method and status code",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stage_duration = Histogram(
            "dcpsfr_stage_duration_seconds",
            "Time per processing stage: decode (per image), predict and fit (per model call), encode (per image)",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "dcpsfr_batch_size", "Images per model forward", buckets=BATCH_BUCKETS, registry=self.registry
        )
        self.queue_depth = Gauge("dcpsfr_queue_depth", "Requests waiting for the model worker", registry=self.registry)
        self.in_flight = Gauge(
            "dcpsfr_requests_in_flight", "Requests being answered (not probes or /metrics)", registry=self.registry
        )
        self.products = Gauge("dcpsfr_products", "Products with stored references", registry=self.registry)
        self.inspections = Counter(
            "dcpsfr_inspections",
            "Inspected images by verdict" + (" and product" if per_product else ""),
            ["verdict", "product"] if per_product else ["verdict"],
            registry=self.registry,
        )
        product_label = ["product"] if per_product else []
        self.relative_score = Histogram(
            "dcpsfr_inspection_relative_score",
            "Inspection score relative to the product's calibration: 0 = median normal value, 1 = the threshold",
            product_label,
            buckets=RELATIVE_SCORE_BUCKETS,
            registry=self.registry,
        )
        self.last_inspection = Gauge(
            "dcpsfr_last_inspection_timestamp_seconds",
            "Unix time of the last inspected image" + (" per product" if per_product else ""),
            product_label,
            registry=self.registry,
        )
        self.model_info = Gauge(
            "dcpsfr_model_info", "The loaded model (value 1)", ["config", "mode", "device"], registry=self.registry
        )
        self.gpu_memory = Gauge(
            "dcpsfr_gpu_memory_allocated_bytes",
            "GPU memory allocated by the model process (0 when not on CUDA)",
            registry=self.registry,
        )
        self.regions = Histogram(
            "dcpsfr_regions_per_inspection",
            "Defect regions (connected components of the mask) per inspected image",
            buckets=REGION_BUCKETS,
            registry=self.registry,
        )
        self.rule_hits = Counter(
            "dcpsfr_rule_hits",
            "Inspections rejected, by the acceptance rule that fired (threshold = the image score rule)",
            ["rule"],
            registry=self.registry,
        )
        self.frame_warnings = Counter(
            "dcpsfr_frame_warnings",
            "Inspected images with a warning, by kind (aspect = another aspect than the product's references, "
            "bit-depth = another bit depth than the product's references')",
            ["kind"],
            registry=self.registry,
        )
        self.records_lost = Counter(
            "dcpsfr_records_lost",
            "Inspection records the spool could not write (a failed data-dir disk): answered but not on the record",
            registry=self.registry,
        )
        for kind in NOTICE_KINDS:
            self.frame_warnings.labels(kind)
        for stage in STAGES:
            self.stage_duration.labels(stage)
        for rule in ALL_RULE_NAMES:
            self.rule_hits.labels(rule)
        if not per_product:
            for verdict in VERDICTS:
                self.inspections.labels(verdict)

    def count_inspection(self, anomalous: bool, product_id: str, relative_score: float | None = None) -> None:
        """Count one inspected image by verdict (and product when per-product), observe its finite relative score and
        stamp the last-inspection time."""
        verdict = "anomalous" if anomalous else "good"
        product = (self.product_label(product_id),) if self.per_product else ()
        self.inspections.labels(verdict, *product).inc()
        if relative_score is not None and math.isfinite(relative_score):
            (self.relative_score.labels(*product) if product else self.relative_score).observe(relative_score)
        (self.last_inspection.labels(*product) if product else self.last_inspection).set_to_current_time()

    def product_label(self, product_id: str) -> str:
        """The product's own name for the first `max_products` products seen, then "other": bounded series."""
        if product_id in self._labelled_products:
            return product_id
        if len(self._labelled_products) < self.max_products:
            self._labelled_products.add(product_id)
            return product_id
        return OTHER_PRODUCTS

    def count_regions(self, n_regions: int, rules_fired: tuple[str, ...]) -> None:
        """Observe one image's region count and count each acceptance rule that fired."""
        self.regions.observe(n_regions)
        for rule in rules_fired:
            self.rule_hits.labels(rule).inc()

    def count_warnings(self, kinds: tuple[str, ...]) -> None:
        """Count one image's warnings by kind (model.NOTICE_KINDS)."""
        for kind in kinds:
            self.frame_warnings.labels(kind).inc()

    def watch(self, queue_depth: Callable[[], float], gpu_memory: Callable[[], float]) -> None:
        """Gauges read at scrape time."""
        self.queue_depth.set_function(queue_depth)
        self.gpu_memory.set_function(gpu_memory)

    def exposition(self) -> bytes:
        """The registry in the Prometheus text exposition format."""
        return generate_latest(self.registry)
