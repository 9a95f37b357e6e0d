"""Service overhead: HTTP latency of one image against the in-process predict of the same image, interleaved."""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench import load
from bench.common import Section, Target, interleaved, p50, percentile, photo_like, png_bytes
from model import create_detector
from service.imaging.decode import decode_image
from service.imaging.encode import PNG_COMPRESS_LEVEL, encode_png

OVERHEAD_RATIO = 1.10  # target: HTTP p50 / in-process p50
BREAKDOWN = ("decode", "queue", "predict", "encode")


def run(args: argparse.Namespace) -> Section:
    """Compare HTTP p50/p95 of POST /inspect (one 512x512 PNG, K = 4) with the in-process predict of the same frame,
    interleaved; stage breakdown and the overhead-ratio target."""
    config = args.service_config
    section = Section("http", f"service overhead ({config}, 512x512 PNG, one keep-alive client, interleaved)")
    references = [png_bytes(photo_like((512, 512), seed)) for seed in range(4)]
    frame = png_bytes(photo_like((512, 512), 100))
    det = create_detector(config, device="cpu", random_init=args.random_init and config != "tiny")
    refs = det.fit_references([decode_image(data, "ref.png", 10**8) for data in references])
    image = decode_image(frame, "frame.png", 10**8)
    server_args = load.parse_args(["--config", config, "--device", "cpu", *args.server_flags])
    n = 30 if args.quick else 150
    http_ms, local_ms, stages = [], [], []
    with (
        tempfile.TemporaryDirectory(prefix="bench-http-") as tmp,
        load.running_server(server_args, Path(tmp), 8) as url,
        httpx.Client(base_url=url, timeout=120) as client,
    ):
        files = [("images", (f"ref{i}.png", data, "image/png")) for i, data in enumerate(references)]
        assert client.post("/products/bench/references", files=files).status_code == 201
        for i in range(n + 5):  # the first 5: warm-up of both paths
            answer, elapsed = timed_post(client, frame)
            local = timed_local(det, image, refs)
            if i >= 5:
                http_ms.append(elapsed)
                local_ms.append(local)
                stages.append(answer["results"][0]["timings_ms"])
    mean = {stage: float(np.mean([t.get(stage, 0.0) for t in stages])) for stage in BREAKDOWN}
    mean["http, JSON, rest"] = p50(http_ms) - sum(mean.values())
    ratio = p50(http_ms) / p50(local_ms)
    section.rows.append(f"HTTP p50 / p95: {p50(http_ms):.1f} / {percentile(http_ms, 95):.1f} ms ({n} requests)")
    section.rows.append(f"in-process predict p50: {p50(local_ms):.1f} ms (same image, same references)")
    section.rows.append(f"overhead: {p50(http_ms) - p50(local_ms):.1f} ms, ratio {ratio:.2f}")
    section.rows.append("mean per request (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in mean.items()))
    section.rows += encode_comparison(det.predict([image], refs)[0].anomaly_map, args.repeats * 10)
    section.targets.append(Target(f"service overhead: HTTP p50 / in-process p50 ({config})", ratio, OVERHEAD_RATIO))
    section.data = {
        "config": config,
        "http_ms": http_ms,
        "in_process_ms": local_ms,
        "http_p50": p50(http_ms),
        "http_p95": percentile(http_ms, 95),
        "in_process_p50": p50(local_ms),
        "overhead_ms": p50(http_ms) - p50(local_ms),
        "ratio": ratio,
        "breakdown_ms": mean,
    }
    return section


def timed_post(client: httpx.Client, frame: bytes) -> tuple[dict, float]:
    """POST one frame to /inspect for product `bench`: the JSON answer and the wall time in ms; raises
    httpx.HTTPStatusError on a non-2xx answer."""
    start = time.perf_counter()
    answer = client.post("/inspect", data={"product_id": "bench"}, files=[("images", ("f.png", frame, "image/png"))])
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
