"""Record rows for the records tests, as `inspection_row` builds them (made here without a model)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

T0 = datetime(2026, 3, 1, 8, 0, 0)


def row(n: int, product_id: str = "p", anomalous: bool = False, **fields: Any) -> dict[str, Any]:
    """Record n: inspected at T0 + n seconds, id f"{n:032x}", part SN-n."""
    return {
        "inspection_id": f"{n:032x}",
        "time": T0 + timedelta(seconds=n),
        "product_id": product_id,
        "reference_version": 1,
        "threshold": 0.5,
        "pixel_threshold": 0.6,
        "threshold_source": "calibrated",
        "rules_version": 0,
        "rules": None,
        "model_config": "tiny",
        "mode": "training-free (random weights)",
        "weights_checksum": "0123456789abcdef",
        "score": 0.9 if anomalous else 0.1,
        "score_scale": "distance",
        "anomalous": anomalous,
        "rule": "threshold" if anomalous else None,
        "rules_fired": ["threshold"] if anomalous else [],
        "regions": [],
        "n_regions": 0,
        "timings_ms": {"decode": 1.0, "queue": 0.5, "predict": 10.0, "encode": 2.0},
        "total_ms": 13.5,
        "warnings": [],
        "filename": f"img{n}.png",
        "width": 8,
        "height": 8,
        "thumbnail": "data:image/jpeg;base64,",
        "part_id": f"SN-{n}",
        "station": "st1",
        "camera": None,
        "trigger_time": None,
        "latency_ms": None,
        "frame_sha256": None,
        "frame_bytes": None,
        "frame_kept": False,
        "replica": "test",
        "review": None,
        **fields,
    }
