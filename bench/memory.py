"""Memory per product (RSS of the loaded references, bytes on disk) and service start-up time with 100 products."""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from bench import load
from bench.common import Section, Target, photo_like
from model import create_detector
from service.decisions.calibration import fit_and_calibrate
from service.products.store import ProductStore
from service.records.blobs import BlobStore
from service.records.database import database_url, open_database

DISK_LIMIT_MB = 32.0  # target: a 4-shot edge product on disk


def run(args: argparse.Namespace) -> Section:
    """Bytes on disk of one K = 4 product, RSS per loaded product, and service start-up time empty vs with 100
    (quick: 20) products; checks the disk target."""
    section = Section("memory", f"memory per product and start-up ({args.config}, K = 4)")
    det = create_detector(args.config, device="cpu", random_init=args.random_init, heads_file="random")
    size = tuple(args.image_size)
    fitted = fit_and_calibrate(det, [photo_like(size, seed) for seed in range(4)])
    n_products = 20 if args.quick else 100
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        root = Path(tmp)
        writer = registry(root)
        for i in range(n_products):
            writer.commit(f"p{i:03d}", fitted.refs, fitted.calibration)
        disk = blob_bytes(root)
        rss_per_product = loaded_rss_per_product(root, det)
        startup = startup_seconds(args, Path(tmp), n_products)
    mb = 1024 * 1024
    section.rows.append(f"on disk per product: {disk / mb:.2f} MB (bank {len(fitted.refs.bank)} tokens)")
    section.rows.append(f"RSS per loaded product: {rss_per_product / mb:.2f} MB")
    section.rows.append(
        f"start-up to /readyz: {startup['empty']:.1f} s empty, {startup['loaded']:.1f} s with {n_products} products"
        f" ({1000 * (startup['loaded'] - startup['empty']) / n_products:.0f} ms per product)"
    )
    section.targets.append(Target(f"{args.config} 4-shot product on disk", disk / mb, DISK_LIMIT_MB, "MB"))
    section.data = {"disk_bytes": disk, "rss_bytes_per_product": rss_per_product, "products": n_products, **startup}
    return section


def registry(data_dir: Path) -> ProductStore:
    """The product store a service on `data_dir` opens (SQLite in the data dir, blobs in DATA_DIR/blobs)."""
    (data_dir / "records").mkdir(parents=True, exist_ok=True)
    return ProductStore(open_database(database_url("", data_dir)), BlobStore(data_dir / "blobs"))


def blob_bytes(data_dir: Path) -> int:
    """Bytes of the blobs on disk (equal references are one blob: the products here share one)."""
    return sum(f.stat().st_size for f in (data_dir / "blobs").rglob("*") if f.is_file())


def loaded_rss_per_product(root: Path, det) -> float:
    """RSS growth of this process while loading every stored product, divided by their number."""
    gc.collect()
    before = psutil.Process().memory_info().rss
    store = registry(root)
    store.open(det.load_references)
    store.refresh()
    after = psutil.Process().memory_info().rss
    n = len(store)
    del store
    return (after - before) / max(n, 1)


def startup_seconds(args: argparse.Namespace, data_dir: Path, n_products: int) -> dict[str, float]:
    """Wall time from `python -m service` to /readyz 200: once on an empty data dir, once with the products."""
    server_args = load.parse_args(
        ["--config", args.config, *(["--random-init"] if args.random_init else []), "--device", "cpu"]
    )
    out = {}
    with tempfile.TemporaryDirectory(prefix="bench-empty-") as empty:
        for label, folder in (("empty", Path(empty)), ("loaded", data_dir)):
            start = time.perf_counter()
            with load.running_server(server_args, folder, 8) as url:
                out[label] = time.perf_counter() - start
                if label == "loaded":
                    count = len(httpx.get(f"{url}/products", timeout=60).json()["products"])
                    assert count == n_products, f"the service loaded {count} of {n_products} products"
    return out
