"""Shared pieces of the benchmark sections: frames, interleaved timing, percentiles, one result record."""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from model import Detector, create_detector


@dataclass
class Section:
    """One benchmark section's outcome: printable rows, raw figures for the JSON, and target checks."""

    name: str
    title: str
    rows: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)


@dataclass
class Target:
    """A performance target as a ratio or a bound: `value` must be <= `limit`."""

    name: str
    value: float
    limit: float
    unit: str = "x"

    @property
    def met(self) -> bool:
        """Whether the value is within the limit (`value <= limit`)."""
        return self.value <= self.limit

    def line(self) -> str:
        """One aligned report line: name, value, unit, the limit and met/MISSED."""
        verdict = "met" if self.met else "MISSED"
        return f"{self.name:58} {self.value:10.3f} {self.unit:3} (target <= {self.limit:g}) {verdict}"


def bench_detector(args: Any) -> Detector:
    """The detector the common bench arguments describe (config, device, random init, runtime), random heads."""
    return create_detector(
        args.config,
        device=args.device,
        random_init=args.random_init,
        heads_file="random",
        runtime=args.runtime,
        runtime_cache_dir=args.runtime_cache_dir,
    )


def photo_like(size: tuple[int, int], seed: int) -> Image.Image:
    """Smooth gradients with mild noise (W, H): compresses like a photo, unlike pure noise."""
    rng = np.random.default_rng(seed)
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, 3)
    channels = [127 + 100 * np.sin(xs / (40 + 20 * c) + ys / (60 + 10 * c) + phase[c]) for c in range(3)]
    pixels = np.stack(channels, axis=-1) + rng.normal(0, 6, (height, width, 3))  # (H, W, 3)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def png_bytes(image: Image.Image) -> bytes:
    """The image encoded as PNG with Pillow's default settings."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA only; a no-op on other devices), so timings cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(
    candidates: dict[str, Callable[[], Any]], repeats: int, device: torch.device | None = None, warmup: int = 1
) -> dict[str, list[float]]:
    """Milliseconds per call of each candidate, round-robin (A, B, A, B, ...) so that load drifts hit all alike."""
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            if device is not None:
                sync(device)
            start = time.perf_counter()
            fn()
            if device is not None:
                sync(device)
            times[name].append((time.perf_counter() - start) * 1000.0)
    return times


def p50(values: list[float]) -> float:
    """The median of the values."""
    return float(statistics.median(values))


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (q in 0..100) of the values, numpy's linear interpolation."""
    return float(np.percentile(values, q))
