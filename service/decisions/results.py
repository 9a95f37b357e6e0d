"""One inspected frame's result: the verdict (threshold or acceptance rules), regions, and the pictures asked for
(mask and heat-map PNGs, the history thumbnail).

Built in the encode pool (`inspection_result` is the `finish` of the engine's predict), from the prediction and the
product version it was compared with.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from model import Frame, Prediction
from service.decisions.rules import judge, region_json
from service.decisions.thresholds import score_scale
from service.imaging.encode import heatmap_png, mask_png, thumbnail_data_url
from service.products.store import Product


def mode_label(mode: str, random_weights: bool) -> str:
    """The mode every response carries, e.g. "full", "training-free" or "training-free (random weights)"."""
    return f"{mode} (random weights)" if random_weights else mode


def new_inspection_id() -> str:
    """A new random inspection id (32 hex digits)."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class PartTag:
    """Which part a frame shows, as the line tells it (all optional): echoed in each of the request's results."""

    part_id: str | None = None  # the PLC's part or serial number
    station: str | None = None  # the line-side station that sent the frame
    camera: str | None = None  # its camera
    view: str | None = None  # which view of the part (camera and light) the frame is, for parts seen several ways
    trigger_time: datetime | None = None  # when the PLC triggered the inspection (the station's clock)


@dataclass(frozen=True)
class RegionLimits:
    """How regions are found and listed (settings; a product's rules may set its own minimum area)."""

    min_area_px: int  # DCPSFR_MIN_REGION_AREA_PX
    max_listed: int  # DCPSFR_MAX_REGIONS_LISTED


@dataclass(frozen=True)
class Outputs:
    """The pictures an inspect request asks for beside the verdict, score and regions (which every result has)."""

    mask: bool = True  # the mask PNG
    heatmap: bool = True  # the heat-map PNG


FULL = Outputs()  # POST /inspect's default JSON
MASK_ONLY = Outputs(heatmap=False)  # format=png: the mask is the body
VERDICT_ONLY = Outputs(mask=False, heatmap=False)  # outputs=verdict: no PNG is encoded


@dataclass(frozen=True)
class InspectionResult:
    """One inspected image's outcome: verdict, scores, thresholds, PNGs, regions, timings."""

    inspection_id: str
    score: float  # on `score_scale`, the scale of `threshold`
    score_scale: str  # "logit" (full mode) or "distance" (training-free)
    anomalous: bool
    threshold: float
    pixel_threshold: float
    width: int
    height: int
    mask_png: bytes | None  # None when not asked for (Outputs)
    anomaly_map_png: bytes | None
    mode: str
    regions: list[dict[str, Any]]  # the largest-valued `max_listed` regions, sorted by max_value
    n_regions: int  # all regions, listed or not
    rule: str | None  # the acceptance rule that fired ("threshold" without rules), None when the part passed
    rules_fired: tuple[str, ...]
    relative_score: float  # 0 = median normal calibration value, 1 = threshold (metrics)
    timings_ms: dict[str, float] = field(default_factory=dict)
    thumbnail: str | None = None  # JPEG data URL for the recent inspections
    warnings: list[str] = field(default_factory=list)  # what the line should know about the frame; [] when nothing
    warning_kinds: tuple[str, ...] = ()  # each warning's kind (model.NOTICE_KINDS), in order: for the metrics

    @property
    def regions_truncated(self) -> bool:
        """Whether more regions were found than are listed."""
        return self.n_regions > len(self.regions)


def inspection_result(
    prediction: Prediction,
    product: Product,
    limits: RegionLimits,
    outputs: Outputs,
    frame: Frame | None = None,
) -> InspectionResult:
    """The verdict and regions of one prediction against `product`'s thresholds and rules, with the PNGs that
    `outputs` asks for (the others are None, and not encoded); with `frame`, a thumbnail too. `timings_ms` holds
    the model's stages and "encode" (this function); `warnings` are the prediction's notices (another bit depth or
    aspect than the references')."""
    start = time.perf_counter()
    threshold, pixel_threshold = product.threshold, product.pixel_threshold
    score = prediction.decision_score  # on the scale of the threshold (the logit in full mode)
    judgement = judge(prediction.anomaly_map, pixel_threshold, score > threshold, product.rules, limits.min_area_px)
    scale = None if product.rules is None else product.rules.mm_per_pixel
    listed = judgement.regions.regions[: limits.max_listed]
    regions = [region_json(r, i, scale, judgement.in_reject_zone[i]) for i, r in enumerate(listed)]
    mask = mask_png(prediction.anomaly_map, pixel_threshold) if outputs.mask else None
    heatmap = heatmap_png(prediction.anomaly_map, pixel_threshold) if outputs.heatmap else None
    encode_ms = (time.perf_counter() - start) * 1000.0
    thumbnail = thumbnail_data_url(frame, product.refs.bit_depth) if frame is not None else None
    height, width = prediction.anomaly_map.shape
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
        regions=regions,
        n_regions=len(judgement.regions),
        rule=judgement.rule,
        rules_fired=judgement.rules_fired,
        relative_score=product.calibration.relative(score, threshold),
        timings_ms={**prediction.timings_ms, "encode": encode_ms},
        thumbnail=thumbnail,
        warnings=list(prediction.warnings),
        warning_kinds=tuple(notice.kind for notice in prediction.notices),
    )
