"""The record of one inspected frame: what the station decided, with which references, thresholds, rules and model,
how long each stage took, and which part it was (the caller's tags)."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from typing import Any

from service.decisions.results import InspectionResult, PartTag
from service.products.store import Product
from service.records.store import as_stored

REPLICA = socket.gethostname()


def inspection_row(
    result: InspectionResult, product: Product, filename: str | None, part: PartTag, time: datetime
) -> dict[str, Any]:
    """The tables' columns of one result (all but the frame's), JSON-serialisable for the spool. `time` (aware):
    when the verdict was made; the trigger-to-verdict latency is measured from the part's `trigger_time`."""
    latency_ms = None
    if part.trigger_time is not None:
        trigger = part.trigger_time if part.trigger_time.tzinfo else part.trigger_time.replace(tzinfo=UTC)
        latency_ms = round((time - trigger).total_seconds() * 1000.0, 3)
    timings = dict(result.timings_ms)
    return {
        "inspection_id": result.inspection_id,
        "time": as_stored(time).isoformat(),
        "product_id": product.product_id,
        "reference_version": product.version,
        "threshold": result.threshold,
        "pixel_threshold": result.pixel_threshold,
        "threshold_source": "calibrated" if product.threshold_override is None else "manual",
        "rules_version": product.rules_version,
        "rules": None if product.rules is None else product.rules.model_dump(mode="json", exclude_none=True),
        "model_config": product.refs.config_name,
        "mode": result.mode,
        "weights_checksum": product.refs.fingerprint,
        "score": result.score,
        "score_scale": result.score_scale,
        "anomalous": result.anomalous,
        "rule": result.rule,
        "rules_fired": list(result.rules_fired),
        "regions": result.regions,
        "n_regions": result.n_regions,
        "timings_ms": timings,
        "total_ms": round(sum(timings.get(k, 0.0) for k in ("decode", "queue", "predict", "encode")), 3),
        "warnings": list(result.warnings),
        "filename": filename,
        "width": result.width,
        "height": result.height,
        "thumbnail": result.thumbnail,
        "part_id": part.part_id,
        "station": part.station,
        "camera": part.camera,
        "view": part.view,
        "trigger_time": None if part.trigger_time is None else as_stored(part.trigger_time).isoformat(),
        "latency_ms": latency_ms,
        "replica": REPLICA,
    }
