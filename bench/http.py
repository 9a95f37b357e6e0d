"""Service overhead: HTTP latency of one image against the in-process predict of the same image, interleaved; the
full answer to a PNG frame beside a station's verdict-only answer to the same frame as JPEG."""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench import load
from bench.common import Section, Target, interleaved, p50, percentile, photo_like, png_bytes
from model import Frame, create_detector
from service.imaging.decode import decode_image
from service.imaging.encode import PNG_COMPRESS_LEVEL, encode_png

OVERHEAD_RATIO = 1.10  # target: HTTP p50 / in-process p50
VERDICT_OVERHEAD_MS = 3.0  # target: verdict-only HTTP p50 - in-process p50 (JPEG frame, no PNG, no thumbnail)
BREAKDOWN = ("decode", "queue", "predict", "encode")
JPEG_QUALITY = 90


@dataclass
class Asked:
    """One way of asking, timed: the server, the frame's bytes and name, the query, and the in-process frame."""

    url: str
    frame: bytes
    filename: str
    params: dict[str, str]
    image: Frame
    http_ms: list[float] = field(default_factory=list)
    local_ms: list[float] = field(default_factory=list)
    stages: list[dict[str, float]] = field(default_factory=list)

    def overhead(self, in_process_p50: float) -> float:
        """HTTP p50 minus the in-process predict's p50 (ms)."""
        return p50(self.http_ms) - in_process_p50


def run(args: argparse.Namespace) -> Section:
    """Compare HTTP p50/p95 of POST /inspect (one 512x512 PNG, K = 4, full answer) with the in-process predict of the
    same frame, interleaved with the station's fast path (the frame as JPEG, outputs=verdict, on a server with
    DCPSFR_HISTORY_THUMBNAILS=false): stage breakdown, the overhead-ratio target and the verdict-only overhead
    target (ms) with its ratio to the full answer's overhead."""
    config = args.service_config
    section = Section("http", f"service overhead ({config}, 512x512, one keep-alive client, interleaved)")
    references = [png_bytes(photo_like((512, 512), seed)) for seed in range(4)]
    photo = photo_like((512, 512), 100)
    det = create_detector(config, device="cpu", random_init=args.random_init and config != "tiny")
    refs = det.fit_references([decode_image(data, "ref.png", 10**8) for data in references])
    server_args = load.parse_args(["--config", config, "--device", "cpu", *args.server_flags])
    n = 30 if args.quick else 150
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp, contextlib.ExitStack() as servers:
        for name in ("full", "verdict"):
            Path(tmp, name).mkdir()
        full_url = servers.enter_context(load.running_server(server_args, Path(tmp, "full"), 8))
        station = {"DCPSFR_HISTORY_THUMBNAILS": "false"}
        verdict_url = servers.enter_context(load.running_server(server_args, Path(tmp, "verdict"), 8, **station))
        full = ask(full_url, png_bytes(photo), "f.png", {})
        verdict = ask(verdict_url, jpeg_bytes(photo), "f.jpg", {"outputs": "verdict"})
        clients = {p.url: servers.enter_context(httpx.Client(base_url=p.url, timeout=120)) for p in (full, verdict)}
        files = [("images", (f"ref{i}.png", data, "image/png")) for i, data in enumerate(references)]
        for client in clients.values():
            assert client.post("/products/bench/references", files=files).status_code == 201
        for i in range(n + 5):  # the first 5: warm-up of every path
            for path in (full, verdict):
                answer, elapsed = timed_post(clients[path.url], path.frame, path.filename, path.params)
                local = timed_local(det, path.image, refs)
                if i >= 5:
                    path.http_ms.append(elapsed)
                    path.local_ms.append(local)
                    path.stages.append(answer["results"][0]["timings_ms"])
    local = p50(full.local_ms + verdict.local_ms)  # the same predict work (512² frame): one baseline for both
    full_overhead, verdict_overhead = full.overhead(local), verdict.overhead(local)
    ratio = p50(full.http_ms) / local
    verdict_ratio = verdict_overhead / full_overhead if full_overhead > 0 else float("nan")  # load can hide it
    section.rows.append(
        f"full answer, PNG frame: HTTP p50 / p95 {p50(full.http_ms):.1f} / {percentile(full.http_ms, 95):.1f} ms "
        f"({n} requests)"
    )
    section.rows.append(
        f"in-process predict p50: {local:.1f} ms (same image, same references; PNG {p50(full.local_ms):.1f}, "
        f"JPEG {p50(verdict.local_ms):.1f} ms, both runs pooled)"
    )
    section.rows.append(f"overhead: {full_overhead:.1f} ms, ratio {ratio:.2f}")
    section.rows.append("mean per request (ms): " + breakdown_row(full))
    section.rows.append(
        f"verdict only, JPEG frame (outputs=verdict, no thumbnail): HTTP p50 / p95 {p50(verdict.http_ms):.1f} / "
        f"{percentile(verdict.http_ms, 95):.1f} ms"
    )
    section.rows.append(
        f"verdict-only overhead: {verdict_overhead:.1f} ms (goal <= {VERDICT_OVERHEAD_MS:g} ms), "
        f"{verdict_ratio:.2f}x the full answer's {full_overhead:.1f} ms"
    )
    section.rows.append("mean per request (ms): " + breakdown_row(verdict))
    section.rows.append(
        f"HTTP p50 verdict only / full: {p50(verdict.http_ms) / p50(full.http_ms):.2f} "
        f"({p50(full.http_ms) - p50(verdict.http_ms):.1f} ms less; no in-process baseline in it, so load hides less)"
    )
    section.rows += encode_comparison(det.predict([full.image], refs)[0].anomaly_map, args.repeats * 10)
    section.targets.append(Target(f"service overhead: HTTP p50 / in-process p50 ({config})", ratio, OVERHEAD_RATIO))
    section.targets.append(
        Target(
            f"verdict-only overhead, JPEG ({config}; {verdict_ratio:.2f}x full)",
            verdict_overhead,
            VERDICT_OVERHEAD_MS,
            "ms",
        )
    )
    section.data = {
        "config": config,
        "http_ms": full.http_ms,
        "in_process_ms": full.local_ms,
        "http_p50": p50(full.http_ms),
        "http_p95": percentile(full.http_ms, 95),
        "in_process_p50": local,
        "overhead_ms": full_overhead,
        "ratio": ratio,
        "breakdown_ms": breakdown(full),
        "verdict_only": {
            "http_ms": verdict.http_ms,
            "in_process_ms": verdict.local_ms,
            "http_p50": p50(verdict.http_ms),
            "http_p95": percentile(verdict.http_ms, 95),
            "in_process_p50": local,
            "overhead_ms": verdict_overhead,
            "overhead_ratio_to_full": verdict_ratio,
            "http_p50_ratio_to_full": p50(verdict.http_ms) / p50(full.http_ms),
            "breakdown_ms": breakdown(verdict),
        },
    }
    return section


def ask(url: str, frame: bytes, filename: str, params: dict[str, str]) -> Asked:
    """A path to time: the frame as the server gets it, and as the in-process detector gets it (decoded alike)."""
    return Asked(url, frame, filename, params, decode_image(frame, filename, 10**8))


def breakdown(path: Asked) -> dict[str, float]:
    """Mean ms per request of each stage in the answers' timings_ms, and the rest of the HTTP p50."""
    mean = {stage: float(np.mean([t.get(stage, 0.0) for t in path.stages])) for stage in BREAKDOWN}
    mean["http, JSON, rest"] = p50(path.http_ms) - sum(mean.values())
    return mean


def breakdown_row(path: Asked) -> str:
    """`breakdown` as one printable row."""
    return ", ".join(f"{k} {v:.1f}" for k, v in breakdown(path).items())


def jpeg_bytes(image: Image.Image) -> bytes:
    """The image as a JPEG (quality JPEG_QUALITY), as a station camera sends it."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def timed_post(
    client: httpx.Client, frame: bytes, filename: str = "f.png", params: dict | None = None
) -> tuple[dict, float]:
    """POST one frame to /inspect for product `bench` (with `params` as the query): the JSON answer and the wall time
    in ms; raises httpx.HTTPStatusError on a non-2xx answer."""
    start = time.perf_counter()
    answer = client.post(
        "/inspect", data={"product_id": "bench"}, files=[("images", (filename, frame))], params=params or {}
    )
    elapsed = (time.perf_counter() - start) * 1000.0
    answer.raise_for_status()
    return answer.json(), elapsed


def timed_local(det, image, refs) -> float:
    """Wall time in ms of one in-process `det.predict([image], refs)`."""
    start = time.perf_counter()
    det.predict([image], refs)
    return (time.perf_counter() - start) * 1000.0


def encode_comparison(anomaly_map: np.ndarray, repeats: int) -> list[str]:
    """The service's PNG writer against Pillow's (adaptive row filters, as Pillow writes PNGs), interleaved."""
    mask = np.where(anomaly_map > np.median(anomaly_map), 255, 0).astype(np.uint8)  # (H, W) about half set
    heat = np.rint(np.clip(anomaly_map / (2 * anomaly_map.max()), 0, 1) * 255).astype(np.uint8)  # (H, W)
    rows = []
    for name, array in (("mask", mask), ("heat map", heat)):
        times = interleaved({"pillow": lambda a=array: pillow_png(a), "zlib": lambda a=array: encode_png(a)}, repeats)
        rows.append(
            f"encode {name} {array.shape[1]}x{array.shape[0]}: Pillow {p50(times['pillow']):.2f} ms,"
            f" service writer {p50(times['zlib']):.2f} ms ({p50(times['pillow']) / p50(times['zlib']):.1f}x),"
            f" {len(pillow_png(array))} vs {len(encode_png(array))} bytes"
        )
    return rows


def pillow_png(array: np.ndarray) -> bytes:
    """Encode a (H, W) uint8 array as a greyscale PNG with Pillow at the service's compression level
    (the comparison baseline)."""
    buffer = io.BytesIO()
    Image.fromarray(array, mode="L").save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()
