"""python -m bench --only records: the inspection records. Insert throughput (records/s, batches of 500) on SQLite
and, with DCPSFR_BENCH_DATABASE_URL=postgresql://..., on PostgreSQL; the CSV export's peak Python memory for
100k records (tracemalloc) against one batch; spool recovery (records spooled by a crashed process, written by the
next); POST /inspect p50 in-process (tiny config, random weights) with the records on and with the spool write
skipped, interleaved; on PostgreSQL, the change feed's delay from a committed announce to the other feed's
callback (LISTEN/NOTIFY)."""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
import tracemalloc
from datetime import datetime, timedelta
from pathlib import Path

from bench.common import Section, p50, photo_like, png_bytes
from service.api.routes.inspections import csv_chunks
from service.records.archive import FrameArchive, RetentionPolicy
from service.records.changes import ChangeFeed, announce
from service.records.database import migrate, open_database
from service.records.recorder import Recorder, RecorderSettings
from service.records.store import RecordFilter, RecordStore

T0 = datetime(2026, 1, 1)
REGION = {
    "id": 1, "bbox": [1, 2, 30, 40], "centroid": [15.0, 20.0], "area_px": 900, "max_value": 0.8, "mean_value": 0.6,
    "in_reject_zone": False,
}  # fmt: skip


def record(n: int) -> dict:
    """A typical record (one region, four timings), inspected at T0 + n ms."""
    return {
        "inspection_id": f"{n:032x}", "time": T0 + timedelta(milliseconds=n), "product_id": f"p{n % 5}",
        "reference_version": 3, "threshold": 0.42, "pixel_threshold": 0.5, "threshold_source": "calibrated",
        "rules_version": 1, "rules": {"max_regions": 0}, "model_config": "edge", "mode": "training-free",
        "weights_checksum": "0123456789abcdef", "score": 0.3 + (n % 7) / 10, "score_scale": "distance",
        "anomalous": n % 7 > 3, "rule": "threshold" if n % 7 > 3 else None, "rules_fired": [],
        "regions": [REGION], "n_regions": 1,
        "timings_ms": {"decode": 1.2, "queue": 0.4, "predict": 21.0, "encode": 2.5}, "total_ms": 25.1,
        "warnings": [], "filename": f"frame{n}.png", "width": 1280, "height": 1024, "thumbnail": "x" * 5000,
        "part_id": f"SN-{n}", "station": "st1", "camera": "cam1", "trigger_time": None, "latency_ms": None,
        "frame_sha256": None, "frame_bytes": None, "frame_kept": False, "replica": "bench",
    }  # fmt: skip


def insert_rate(url: str, n: int) -> float:
    """Records inserted per second, in batches of 500, into a fresh database at `url`."""
    engine = open_database(url)
    migrate(engine)
    store = RecordStore(engine)
    rows = [record(i) for i in range(n)]
    start = time.perf_counter()
    for i in range(0, n, 500):
        store.insert(rows[i : i + 500])
    seconds = time.perf_counter() - start
    engine.dispose()
    return n / seconds


def export_peak_mib(url: str, n: int) -> tuple[float, float, float]:
    """(peak MiB exporting all n records as CSV, peak MiB of one batch, seconds) on the database at `url`."""
    store = RecordStore(open_database(url))
    tracemalloc.start()
    rows, _ = store.page(RecordFilter(), 1000)
    one_batch = tracemalloc.get_traced_memory()[1] / 2**20
    del rows
    tracemalloc.reset_peak()
    start, size = time.perf_counter(), 0
    for chunk in csv_chunks(store, RecordFilter()):
        size += len(chunk)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return peak, one_batch, seconds


def recovery_s(folder: Path, n: int) -> float:
    """Seconds for a new process's recorder to write n records left in the spool by a crashed one."""
    url = f"sqlite:///{folder / 'recovery.sqlite3'}"
    settings = RecorderSettings(3600, RetentionPolicy(True, 1, 30), 10**12, 3600)
    crashed = Recorder(open_database(url), folder / "spool", FrameArchive(folder / "frames"), settings)
    crashed.start()
    for i in range(n):
        row = {k: v for k, v in record(i).items() if not k.startswith("frame_")}
        crashed.record({**row, "time": row["time"].isoformat()}, frame=None)
    crashed._stopping.set()
    os.close(crashed.spool._lock_fd)  # as a SIGKILL leaves it: the lock released, the segment unsealed
    start = time.perf_counter()
    recovering = Recorder(open_database(url), folder / "spool", FrameArchive(folder / "frames"), settings)
    recovering.start()
    assert recovering.flush()
    seconds = time.perf_counter() - start
    recovering.stop()
    return seconds


def notify_delays_ms(url: str, n: int) -> list[float]:
    """Milliseconds from the start of each of n commits (one announce each) until a ChangeFeed sees the key."""
    seen: dict[str, float] = {}
    arrived = threading.Event()

    def on_change(key: str | None) -> None:
        if key is not None:
            seen[key] = time.perf_counter()
            arrived.set()

    feed = ChangeFeed(url, on_change)
    feed.start()
    engine = open_database(url)
    delays = []
    try:
        deadline = time.monotonic() + 30
        while not feed.connected and time.monotonic() < deadline:
            time.sleep(0.01)
        for i in range(n):
            arrived.clear()
            with engine.connect() as connection:
                announce(connection, f"bench-{i}")
                committing = time.perf_counter()  # the callback may run before commit() returns here
                connection.commit()
            arrived.wait(10)
            delays.append((seen[f"bench-{i}"] - committing) * 1000)
    finally:
        feed.stop()
        engine.dispose()
    return delays


def inspect_p50(folder: Path, repeats: int) -> tuple[float, float]:
    """POST /inspect p50 (ms), in-process, tiny config: (records on, spool write skipped), interleaved."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    settings = Settings(model_config_name="tiny", device="cpu", data_dir=folder / "data")
    frame = png_bytes(photo_like((256, 256), seed=1))
    with TestClient(create_app(settings)) as client:
        assert client.app.state.services.worker.ready_event.wait(300)
        refs = [
            ("images", (f"r{i}.png", png_bytes(photo_like((256, 256), seed=10 + i)), "image/png")) for i in range(2)
        ]
        assert client.post("/products/b/references", files=refs).status_code == 201
        recorder = client.app.state.services.recorder
        real = recorder.record
        times: dict[str, list[float]] = {"on": [], "off": []}
        for i in range(repeats * 2 + 2):
            mode = "on" if i % 2 else "off"
            recorder.record = real if mode == "on" else (lambda row, frame: row)
            start = time.perf_counter()
            answer = client.post(
                "/inspect", data={"product_id": "b"}, files=[("images", ("f.png", frame, "image/png"))]
            )
            if i >= 2:
                times[mode].append((time.perf_counter() - start) * 1000)
            assert answer.status_code == 200, answer.text
        recorder.record = real
    return p50(times["on"]), p50(times["off"])


def run(args: argparse.Namespace) -> Section:
    """The records' figures (see the module docstring)."""
    section = Section("records", "inspection records: inserts, export memory, spool recovery, /inspect overhead")
    n_insert, n_export = (5_000, 20_000) if args.quick else (20_000, 100_000)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        urls = {"sqlite": f"sqlite:///{folder / 'insert.sqlite3'}"}
        if os.environ.get("DCPSFR_BENCH_DATABASE_URL"):
            urls["postgresql"] = os.environ["DCPSFR_BENCH_DATABASE_URL"]
        for name, url in urls.items():
            rate = insert_rate(url, n_insert)
            section.data[f"insert_per_s_{name}"] = rate
            section.rows.append(f"insert {name:<11} {rate:>10,.0f} records/s ({n_insert} records, batches of 500)")
        if "postgresql" in urls:
            delays = notify_delays_ms(urls["postgresql"], 20 if args.quick else 100)
            section.data.update(notify_p50_ms=p50(delays), notify_max_ms=max(delays))
            section.rows.append(
                f"change feed, commit -> other connection's callback (LISTEN/NOTIFY): p50 {p50(delays):.1f} ms, "
                f"max {max(delays):.1f} ms ({len(delays)} commits)"
            )
        export_url = f"sqlite:///{folder / 'export.sqlite3'}"
        insert_rate(export_url, n_export)
        peak, one_batch, seconds = export_peak_mib(export_url, n_export)
        section.data.update(export_records=n_export, export_peak_mib=peak, export_batch_mib=one_batch)
        section.rows.append(
            f"CSV export of {n_export} records: peak {peak:.1f} MiB (one batch of 1000: {one_batch:.1f} MiB), "
            f"{seconds:.1f} s under tracemalloc"
        )
        seconds = recovery_s(folder, 10_000)
        section.data["recovery_s_10k"] = seconds
        section.rows.append(f"spool recovery, 10,000 records: {seconds:.2f} s")
        on, off = inspect_p50(folder, 15 if args.quick else 40)
        section.data.update(inspect_p50_ms_records=on, inspect_p50_ms_without=off)
        section.rows.append(f"POST /inspect p50 (tiny, CPU): {on:.1f} ms with records, {off:.1f} ms without")
    return section
