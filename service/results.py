"""Predictions -> what clients get: verdicts, mask and heat-map PNGs (encoded off the event loop), headers."""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool

from model import Prediction
from service.images import heatmap_png, mask_png
from service.metrics import Metrics
from service.store import Product
from service.worker import BatchResult


def mode_label(mode: str, random_weights: bool) -> str:
    """The mode every response carries, e.g. "full", "training-free" or "training-free (random weights)"."""
    return f"{mode} (random weights)" if random_weights else mode


@dataclass(frozen=True)
class InspectionResult:
    score: float
    anomalous: bool
    threshold: float
    pixel_threshold: float
    width: int
    height: int
    mask_png: bytes
    anomaly_map_png: bytes | None
    mode: str
    timings_ms: dict[str, float]

    def as_json(self, filename: str | None) -> dict[str, Any]:
        return {
            "filename": filename,
            "score": self.score,
            "anomalous": self.anomalous,
            "threshold": self.threshold,
            "pixel_threshold": self.pixel_threshold,
            "width": self.width,
            "height": self.height,
            "mask_png": base64.b64encode(self.mask_png).decode("ascii"),
            "anomaly_map_png": base64.b64encode(self.anomaly_map_png or b"").decode("ascii"),
            "mode": self.mode,
            "timings_ms": self.timings_ms,
        }


def png_headers(result: InspectionResult, product: Product) -> dict[str, str]:
    return {
        "X-Anomaly-Score": repr(result.score),
        "X-Anomalous": "true" if result.anomalous else "false",
        "X-Threshold": repr(result.threshold),
        "X-Pixel-Threshold": repr(result.pixel_threshold),
        "X-Product-Id": product.product_id,
        "X-Reference-Version": str(product.version),
        "X-Mode": result.mode,
    }


async def encode_results(
    batch: BatchResult, product: Product, decode_ms: list[float], metrics: Metrics, with_heatmap: bool
) -> list[InspectionResult]:
    jobs = [
        run_in_threadpool(_encode_one, prediction, product, ms, batch, metrics, with_heatmap)
        for prediction, ms in zip(batch.predictions, decode_ms, strict=True)
    ]
    return list(await asyncio.gather(*jobs))


def _encode_one(
    prediction: Prediction, product: Product, decode_ms: float, batch: BatchResult, metrics: Metrics, with_heatmap: bool
) -> InspectionResult:
    start = time.perf_counter()
    threshold, pixel_threshold = product.threshold, product.pixel_threshold
    mask = mask_png(prediction.anomaly_map, pixel_threshold)
    heatmap = heatmap_png(prediction.anomaly_map, pixel_threshold) if with_heatmap else None
    encode_s = time.perf_counter() - start
    metrics.stage_duration.labels("encode").observe(encode_s)
    height, width = prediction.anomaly_map.shape
    timings = {
        "decode": decode_ms,
        "queue": batch.queue_ms,
        "predict": batch.predict_ms,
        **prediction.timings_ms,
        "encode": encode_s * 1000.0,
    }
    return InspectionResult(
        score=float(prediction.score),
        anomalous=bool(prediction.score > threshold),
        threshold=threshold,
        pixel_threshold=pixel_threshold,
        width=width,
        height=height,
        mask_png=mask,
        anomaly_map_png=heatmap,
        mode=mode_label(prediction.mode, prediction.random_weights),
        timings_ms={k: round(v, 3) for k, v in timings.items()},
    )
