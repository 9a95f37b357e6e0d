"""Predictions -> what clients get: verdicts, mask and heat-map PNGs (encoded off the event loop), headers."""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass
from typing import Any

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from model import Prediction
from service.calibration import decision_score, score_scale
from service.history import new_inspection_id, thumbnail_data_url
from service.images import heatmap_png, mask_png
from service.metrics import Metrics
from service.rules import judge, region_json
from service.store import Product
from service.worker import BatchResult


def mode_label(mode: str, random_weights: bool) -> str:
    """The mode every response carries, e.g. "full", "training-free" or "training-free (random weights)"."""
    return f"{mode} (random weights)" if random_weights else mode


@dataclass(frozen=True)
class RegionLimits:
    """How regions are found and listed (settings; a product's rules may set its own minimum area)."""

    min_area_px: int  # DCPSFR_MIN_REGION_AREA_PX
    max_listed: int  # DCPSFR_MAX_REGIONS_LISTED


@dataclass(frozen=True)
class InspectionResult:
    """One inspected image's outcome as the service answers it: verdict, scores, thresholds, PNGs, regions, timings."""

    inspection_id: str
    score: float  # on `score_scale`, the scale of `threshold`
    score_scale: str  # "logit" (full mode) or "distance" (training-free)
    anomalous: bool
    threshold: float
    pixel_threshold: float
    width: int
    height: int
    mask_png: bytes
    anomaly_map_png: bytes | None
    mode: str
    timings_ms: dict[str, float]
    regions: list[dict[str, Any]]  # the largest-valued `max_listed` regions, sorted by max_value
    n_regions: int  # all regions, listed or not
    rule: str | None  # the acceptance rule that fired ("threshold" without rules), None when the part passed
    rules_fired: tuple[str, ...]
    relative_score: float  # 0 = median normal calibration value, 1 = threshold (metrics)
    thumbnail: str | None = None  # JPEG data URL for the recent-inspections ring

    @property
    def regions_truncated(self) -> bool:
        """Whether more regions were found than are listed."""
        return self.n_regions > len(self.regions)

    def as_json(self, filename: str | None) -> dict[str, Any]:
        """The result as one entry of POST /inspect's `results` (PNGs base64, empty heat map when not encoded)."""
        return {
            "inspection_id": self.inspection_id,
            "filename": filename,
            "score": self.score,
            "score_scale": self.score_scale,
            "anomalous": self.anomalous,
            "threshold": self.threshold,
            "pixel_threshold": self.pixel_threshold,
            "width": self.width,
            "height": self.height,
            "mask_png": base64.b64encode(self.mask_png).decode("ascii"),
            "anomaly_map_png": base64.b64encode(self.anomaly_map_png or b"").decode("ascii"),
            "mode": self.mode,
            "timings_ms": self.timings_ms,
            "regions": self.regions,
            "n_regions": self.n_regions,
            "regions_truncated": self.regions_truncated,
            "rule": self.rule,
            "rules_fired": list(self.rules_fired),
        }


def png_headers(result: InspectionResult, product: Product) -> dict[str, str]:
    """The X-* headers that carry the verdict when POST /inspect answers the mask PNG (format=png)."""
    return {
        "X-Anomaly-Score": repr(result.score),
        "X-Score-Scale": result.score_scale,
        "X-Inspection-Id": result.inspection_id,
        "X-Anomalous": "true" if result.anomalous else "false",
        "X-Threshold": repr(result.threshold),
        "X-Pixel-Threshold": repr(result.pixel_threshold),
        "X-Product-Id": product.product_id,
        "X-Reference-Version": str(product.version),
        "X-Mode": result.mode,
        "X-Region-Count": str(result.n_regions),
        "X-Rule": result.rule or "",
    }


async def encode_results(
    batch: BatchResult,
    product: Product,
    decode_ms: list[float],
    metrics: Metrics,
    with_heatmap: bool,
    limits: RegionLimits,
    images: list[Image.Image] | None = None,
) -> list[InspectionResult]:
    """One result per prediction; with `images`, each result carries a thumbnail of its frame."""
    frames = images or [None] * len(batch.predictions)
    jobs = [
        run_in_threadpool(_encode_one, prediction, product, ms, batch, metrics, with_heatmap, limits, frame)
        for prediction, ms, frame in zip(batch.predictions, decode_ms, frames, strict=True)
    ]
    return list(await asyncio.gather(*jobs))


def _encode_one(
    prediction: Prediction,
    product: Product,
    decode_ms: float,
    batch: BatchResult,
    metrics: Metrics,
    with_heatmap: bool,
    limits: RegionLimits,
    frame: Image.Image | None,
) -> InspectionResult:
    start = time.perf_counter()
    threshold, pixel_threshold = product.threshold, product.pixel_threshold
    score = decision_score(prediction)  # on the scale of the threshold (the logit in full mode)
    judgement = judge(prediction.anomaly_map, pixel_threshold, score > threshold, product.rules, limits.min_area_px)
    scale = None if product.rules is None else product.rules.mm_per_pixel
    listed = judgement.regions.regions[: limits.max_listed]
    regions = [region_json(r, i, scale, judgement.in_reject_zone[i]) for i, r in enumerate(listed)]
    metrics.count_regions(len(judgement.regions), judgement.rules_fired)
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
    thumbnail = thumbnail_data_url(frame, product.refs.bit_depth) if frame is not None else None
    return InspectionResult(
        inspection_id=new_inspection_id(),
        score=score,
        score_scale=score_scale(prediction.mode),
        anomalous=judgement.anomalous,
        threshold=threshold,
        pixel_threshold=pixel_threshold,
        width=width,
        height=height,
        mask_png=mask,
        anomaly_map_png=heatmap,
        mode=mode_label(prediction.mode, prediction.random_weights),
        timings_ms={k: round(v, 3) for k, v in timings.items()},
        regions=regions,
        n_regions=len(judgement.regions),
        rule=judgement.rule,
        rules_fired=judgement.rules_fired,
        relative_score=product.calibration.relative(score, threshold),
        thumbnail=thumbnail,
    )


class InspectedImage(BaseModel):
    """One image's answer in POST /inspect (OpenAPI documentation of `InspectionResult.as_json`; other fields,
    such as the regions, are allowed)."""

    model_config = ConfigDict(extra="allow")
    inspection_id: str = Field(description="unique id: GET /products/{id}/inspections, POST .../feedback")
    filename: str | None = Field(description="the uploaded file's name")
    score: float = Field(description="image anomaly score on `score_scale`; higher = more anomalous")
    score_scale: str = Field(description='"logit" (full mode) or "distance" (training-free): score and threshold')
    anomalous: bool = Field(description="the verdict")
    threshold: float = Field(description="the product's image threshold, on the score's scale")
    pixel_threshold: float = Field(description="anomaly-map value above which a pixel is in the mask")
    width: int = Field(description="the image's width in pixels (the mask's and map's too)")
    height: int = Field(description="the image's height in pixels")
    mask_png: str = Field(description="base64 8-bit PNG: 255 where the map is above pixel_threshold, else 0")
    anomaly_map_png: str = Field(description="base64 8-bit heat-map PNG (128 = pixel_threshold)")
    mode: str = Field(description='"full" or "training-free", with " (random weights)" when they are random')
    timings_ms: dict[str, float] = Field(description="decode, queue, predict, the model's stages, encode")


class InspectResponse(BaseModel):
    """The JSON answer of POST /inspect (documentation; other fields are allowed)."""

    model_config = ConfigDict(extra="allow")
    product_id: str
    reference_version: int = Field(description="the product version the images were compared with")
    results: list[InspectedImage] = Field(description="one per uploaded image, in order")
