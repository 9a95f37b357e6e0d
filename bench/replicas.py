"""Replicas sharing one data dir and one database: how long a new version takes to reach another replica (with
DCPSFR_BENCH_DATABASE_URL=postgresql://...: replicas share the registry through PostgreSQL, SQLite tells no other
process), and how fast a replica with 100 stored products is ready and has loaded them all."""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

from bench import load, memory
from bench.common import Section, p50, photo_like, png_bytes
from model import create_detector
from service.decisions.calibration import fit_and_calibrate

POLL_S = 2.0  # the default fallback poll: used only while the change feed cannot listen


def run(args: argparse.Namespace) -> Section:
    """Start-up times on an empty and a stored data dir, and the delay until a new version uploaded to one replica is
    served by another (only with DCPSFR_BENCH_DATABASE_URL)."""
    config = args.service_config
    section = Section("replicas", f"replicas on one data dir ({config}, 2 references of 256x256)")
    server_args = load.parse_args(["--config", config, "--device", "cpu", *args.server_flags])
    references = [png_bytes(photo_like((256, 256), seed)) for seed in range(2)]
    n_products = 20 if args.quick else 100
    repeats = 5 if args.quick else 20
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp:
        startup = startup_seconds(server_args, Path(tmp), n_products, config, args.random_init)
        section.rows.append(
            f"start-up to /readyz: {startup['empty']:.1f} s empty, {startup['stored']:.1f} s with {n_products} "
            f"products; all {n_products} loaded (background) after {startup['all_loaded']:.1f} s"
        )
        url = os.environ.get("DCPSFR_BENCH_DATABASE_URL", "")
        delays = propagation_seconds(server_args, Path(tmp) / "shared", url, references, repeats) if url else []
        if delays:
            section.rows.append(
                f"new version on A -> served by B (change feed): median {p50(delays) * 1000:.1f} ms, max "
                f"{max(delays) * 1000:.1f} ms "
                f"({repeats} uploads)"
            )
        else:
            section.rows.append("propagation not measured: set DCPSFR_BENCH_DATABASE_URL to a PostgreSQL database")
    section.data = {"products": n_products, **startup, "propagation_s": delays}
    return section


def startup_seconds(server_args, root: Path, n_products: int, config: str, random_init: bool) -> dict[str, float]:
    """Wall time from `python -m service` to /readyz 200 on an empty and on a stored data dir, and until the
    stored one has loaded every product (the dcpsfr_products gauge)."""
    det = create_detector(config, device="cpu", random_init=random_init and config != "tiny")
    fitted = fit_and_calibrate(det, [photo_like((256, 256), seed) for seed in range(2)])
    stored = root / "stored"
    writer = memory.registry(stored)
    for i in range(n_products):
        writer.commit(f"p{i:03d}", fitted.refs, fitted.calibration)
    out = {}
    for label, folder in (("empty", root / "empty"), ("stored", stored)):
        folder.mkdir(exist_ok=True)
        start = time.perf_counter()
        with load.running_server(server_args, folder, 8) as url:
            out[label] = time.perf_counter() - start
            if label == "stored":
                while loaded_products(url) < n_products:
                    time.sleep(0.05)
                out["all_loaded"] = time.perf_counter() - start
    return out


def loaded_products(url: str) -> float:
    """The service's `dcpsfr_products` gauge from /metrics (0 when absent)."""
    exposition = httpx.get(f"{url}/metrics", timeout=60).text
    found = re.search(r"^dcpsfr_products (\S+)$", exposition, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def propagation_seconds(server_args, data_dir: Path, url: str, references: list[bytes], n: int) -> list[float]:
    """Seconds from A's 201 for a new version until B's GET /products/p shows that version (both on database `url`)."""
    data_dir.mkdir(parents=True)
    files = [("images", (f"ref{i}.png", data, "image/png")) for i, data in enumerate(references)]
    delays = []
    with ExitStack() as stack:
        a, b = (
            stack.enter_context(
                load.running_server(server_args, data_dir, 8, DCPSFR_STORE_POLL_S=str(POLL_S), DCPSFR_DATABASE_URL=url)
            )
            for _ in range(2)
        )
        with httpx.Client(base_url=a, timeout=120) as client_a, httpx.Client(base_url=b, timeout=120) as client_b:
            client_a.post("/products/p/references", files=files).raise_for_status()
            client_b.get("/products/p").raise_for_status()  # B has the product in memory from here on
            for _ in range(n):
                version = client_a.post("/products/p/references", files=files).json()["version"]
                start = time.perf_counter()
                while client_b.get("/products/p").json()["version"] != version:
                    time.sleep(0.005)
                delays.append(time.perf_counter() - start)
    return delays
