"""Load benchmark of the inspection service's HTTP path and its dynamic batching. Numbers, not assertions.

Starts real `python -m service` processes on a free loopback port (a temporary data dir, the settings below
passed as DCPSFR_* variables), waits for /readyz, uploads references for one product, then sends a bounded
load: --requests POST /inspect calls (one image each) from --concurrency concurrent clients. Per run it
reports requests, errors by status (429 apart), latency p50/p95/p99, images/s, and from the service's own
/metrics (difference over the measured load) the mean images per model forward and the mean forward time.
The server is always stopped at the end, also on errors and Ctrl-C.

Images: --images files or folders (the first --references are uploaded as references, the rest inspected);
by default the real bottle images in ../shared/data/mvtec_ad/bottle_xs (train/good as references, test/* as
frames) when present, else synthetic 900x900 frames. The `tiny` config has random weights, `--random-init`
gives the real-size architecture with random weights: timing only, the scores mean nothing.

Examples:
    .venv/bin/python -m bench.load --compare                      # tiny, MAX_BATCH_SIZE 1 vs 8
    .venv/bin/python -m bench.load --config edge --random-init --compare --requests 24 --concurrency 4
    .venv/bin/python -m bench.load --url http://127.0.0.1:8000 --product-id bottle
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
BOTTLE_DIR = REPO.parent / "shared" / "data" / "mvtec_ad" / "bottle_xs"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".bmp": "image/bmp"}


@dataclass(frozen=True)
class Upload:
    """One image file to send: its file name and raw bytes."""

    name: str
    data: bytes

    def part(self) -> tuple[str, bytes, str]:
        """The httpx multipart tuple (name, bytes, media type), the type guessed from the suffix
        (image/tiff when unknown)."""
        return self.name, self.data, MEDIA_TYPES.get(Path(self.name).suffix.lower(), "image/tiff")


@dataclass(frozen=True)
class Workload:
    """The references to upload, the frames to inspect, and a description of where they came from."""

    references: list[Upload]
    frames: list[Upload]
    source: str


@dataclass
class RunResult:
    """Outcome of one measured load run: counts by status, client
    latency, throughput and the service's own batch figures."""

    label: str
    max_batch_size: int | None
    requests: int = 0
    ok: int = 0
    rejected_429: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # status (or "transport") -> count, 429 excluded
    wall_s: float = 0.0
    stopped_early: bool = False
    latency_ms: dict[str, float] = field(default_factory=dict)  # p50, p95, p99, mean (successful requests)
    images_per_s: float = 0.0
    mean_batch: float | None = None  # from /metrics: images per model forward
    forwards: int | None = None
    forward_ms: float | None = None  # from /metrics: mean wall time of one forward
    stages_ms: dict[str, float] = field(default_factory=dict)  # mean of the answers' timings_ms


# --- images --------------------------------------------------------------------------------------------------


def image_files(paths: list[Path]) -> list[Path]:
    """The image files among `paths`, folders searched recursively;
    exits the program when a path is missing or nothing is found."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            sys.exit(f"error: --images: {path} does not exist")
    if not found:
        sys.exit(f"error: --images: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in {paths}")
    return found


def read_uploads(paths: list[Path]) -> list[Upload]:
    """Read each file into an Upload named after the file."""
    return [Upload(path.name, path.read_bytes()) for path in paths]


def synthetic_frames(n: int, size: tuple[int, int], seed: int) -> list[Upload]:
    """Smooth gradients plus mild noise: PNG sizes like a real photo, not like incompressible noise."""
    rng = np.random.default_rng(seed)
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    uploads = []
    for i in range(n):
        phase = rng.uniform(0, 2 * np.pi, 3)
        base = [127 + 100 * np.sin(xs / (40 + 20 * c) + ys / (60 + 10 * c) + phase[c]) for c in range(3)]
        pixels = np.stack(base, axis=-1) + rng.normal(0, 6, (height, width, 3))  # (H, W, 3)
        buffer = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
        uploads.append(Upload(f"synthetic-{seed}-{i}.png", buffer.getvalue()))
    return uploads


def build_workload(args: argparse.Namespace) -> Workload:
    """References and frames from --images, else MVTec AD bottle_xs when present (and not --synthetic), else synthetic
    PNGs; with --images the frames are the files after the first K, or all files when none are left."""
    if args.images:
        files = image_files(args.images)
        references, frames = files[: args.references], files[args.references :] or files
        return Workload(read_uploads(references), read_uploads(frames), f"{len(files)} files from --images")
    if (BOTTLE_DIR / "train" / "good").is_dir() and not args.synthetic:
        references = sorted((BOTTLE_DIR / "train" / "good").glob("*.png"))[: args.references]
        frames = sorted((BOTTLE_DIR / "test").rglob("*.png"))
        return Workload(read_uploads(references), read_uploads(frames), f"MVTec AD bottle_xs ({BOTTLE_DIR})")
    size = tuple(args.image_size)
    references = synthetic_frames(args.references, size, seed=1)
    frames = synthetic_frames(8, size, seed=2)
    return Workload(references, frames, f"synthetic {size[0]}x{size[1]} PNG")


# --- the server ----------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it; another process may still take it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(args: argparse.Namespace, data_dir: Path, max_batch_size: int, **extra: str) -> dict[str, str]:
    """The environment of a started service: this process's environment plus the DCPSFR_* settings from `args`
    (API keys off) and `extra`."""
    return {
        **os.environ,
        "DCPSFR_MODEL_CONFIG": args.config,
        "DCPSFR_RANDOM_INIT": "true" if args.random_init else "false",
        "DCPSFR_DATA_DIR": str(data_dir),
        "DCPSFR_DEVICE": args.device,
        "DCPSFR_MAX_BATCH_SIZE": str(max_batch_size),
        "DCPSFR_MAX_WAIT_MS": str(args.max_wait_ms),
        "DCPSFR_QUEUE_SIZE": str(args.queue_size),
        "DCPSFR_API_KEYS": "",
        "DCPSFR_LOG_LEVEL": args.server_log_level,
        **extra,
    }


@contextmanager
def running_server(args: argparse.Namespace, data_dir: Path, max_batch_size: int, **env: str) -> Iterator[str]:
    """A `python -m service` process on a free loopback port (`env`: more DCPSFR_* variables); yields its URL
    once /readyz is 200."""
    port = free_port()
    log_path = data_dir / f"server-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO,
            env=server_env(args, data_dir, max_batch_size, **env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, log_path, args.start_timeout_s)
        yield url
    finally:
        stop(process)


def wait_ready(url: str, process: subprocess.Popen, log_path: Path, timeout_s: float) -> None:
    """Poll GET /readyz every 0.2 s until it is 200; exits the program with the server log when the process ends, the
    service reports unavailable or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=url, timeout=10) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                sys.exit(f"error: the server exited with status {process.returncode}:\n{log_path.read_text()}")
            try:
                answer = client.get("/readyz")
                if answer.status_code == 200:
                    return
                if answer.json().get("status") == "unavailable":
                    sys.exit(f"error: the service is unavailable: {answer.json().get('detail')}")
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    sys.exit(f"error: the server was not ready after {timeout_s:.0f} s (--start-timeout-s):\n{log_path.read_text()}")


def stop(process: subprocess.Popen) -> None:
    """Terminate the server process, kill it if it has not exited after 30 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- talking to the service ----------------------------------------------------------------------------------


def client_headers(api_key: str | None) -> dict[str, str]:
    """The X-API-Key header when a key is given, else no headers."""
    return {"X-API-Key": api_key} if api_key else {}


def describe_service(client: httpx.Client) -> str:
    """The service as "config=... mode=... device=..." from GET /readyz; exits the program when it is not 200."""
    answer = client.get("/readyz")
    if answer.status_code != 200:
        sys.exit(f"error: {client.base_url}readyz answered {answer.status_code}: {answer.text}")
    ready = answer.json()
    return f"config={ready['config']} mode={ready['mode']} device={ready['device']}"


def ensure_product(
    client: httpx.Client, product_id: str, references: list[Upload], replace: bool, create: bool
) -> None:
    """Upload the references when asked to replace them, or when the product is missing and creating is allowed
    (a server restarted on the same data dir keeps the product: no second fit)."""
    exists = client.get(f"/products/{product_id}").status_code == 200
    if exists and not replace:
        return
    if not exists and not create:
        sys.exit(f"error: product {product_id!r} does not exist on {client.base_url}; add --upload-references")
    files = [("images", ref.part()) for ref in references]
    start = time.perf_counter()
    answer = client.post(f"/products/{product_id}/references", files=files, timeout=None)
    if answer.status_code != 201:
        sys.exit(f"error: uploading references answered {answer.status_code}: {answer.text}")
    print(f"  references: {len(references)} uploaded in {time.perf_counter() - start:.1f} s")


def batch_metrics(client: httpx.Client) -> dict[str, float]:
    """Sums and counts of the batch-size and predict-stage histograms from /metrics."""
    text = client.get("/metrics").text
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in ("dcpsfr_batch_size_sum", "dcpsfr_batch_size_count"):
                values[sample.name] = sample.value
            elif sample.name.startswith("dcpsfr_stage_duration_seconds_") and sample.labels.get("stage") == "predict":
                values[sample.name.replace("dcpsfr_stage_duration_seconds", "predict")] = sample.value
    return values


async def send_load(
    url: str, product_id: str, frames: list[Upload], args: argparse.Namespace, n_requests: int, progress: bool
) -> tuple[list[float], Counter, list[dict[str, float]], float, bool]:
    """n_requests POST /inspect from args.concurrency workers; stops issuing new ones after args.max_seconds."""
    latencies: list[float] = []
    statuses: Counter = Counter()
    timings: list[dict[str, float]] = []
    issued = 0
    start = time.perf_counter()
    deadline = start + args.max_seconds
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    bar = tqdm(total=n_requests, desc="  requests", leave=False, disable=not progress, file=sys.stderr)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal issued
        while issued < n_requests and time.perf_counter() < deadline:
            frame = frames[issued % len(frames)]
            issued += 1
            sent = time.perf_counter()
            try:
                answer = await client.post(
                    "/inspect",
                    params={"format": args.format},
                    data={"product_id": product_id},
                    files=[("images", frame.part())],
                )
                statuses[str(answer.status_code)] += 1
            except httpx.TransportError as err:
                statuses["transport"] += 1
                tqdm.write(f"  transport error: {type(err).__name__}: {err}", file=sys.stderr)
                continue
            finally:
                bar.update(1)
            if answer.status_code == 200:
                latencies.append((time.perf_counter() - sent) * 1000.0)
                if args.format == "json":
                    timings.append(answer.json()["results"][0]["timings_ms"])

    async with httpx.AsyncClient(
        base_url=url, timeout=args.request_timeout_s, limits=limits, headers=client_headers(args.api_key)
    ) as client:
        await asyncio.gather(*(worker(client) for _ in range(args.concurrency)))
    bar.close()
    return latencies, statuses, timings, time.perf_counter() - start, issued < n_requests


def bench_url(
    url: str, args: argparse.Namespace, workload: Workload, label: str, batch: int | None, create: bool
) -> RunResult:
    """Make sure the product exists, warm up, then send the measured load to `url` and summarise it with the /metrics
    difference over the run."""
    with httpx.Client(base_url=url, timeout=args.request_timeout_s, headers=client_headers(args.api_key)) as client:
        print(f"  service: {describe_service(client)}")
        ensure_product(client, args.product_id, workload.references, args.upload_references, create)
        if args.warmup:
            asyncio.run(send_load(url, args.product_id, workload.frames, args, args.warmup, progress=False))
        before = batch_metrics(client)
        latencies, statuses, timings, wall_s, stopped = asyncio.run(
            send_load(url, args.product_id, workload.frames, args, args.requests, progress=True)
        )
        after = batch_metrics(client)
    return summarize(label, batch, latencies, statuses, timings, wall_s, stopped, before, after)


def summarize(
    label: str,
    batch: int | None,
    latencies: list[float],
    statuses: Counter,
    timings: list[dict[str, float]],
    wall_s: float,
    stopped: bool,
    before: dict[str, float],
    after: dict[str, float],
) -> RunResult:
    """Build the RunResult: latency percentiles (ms) of successful requests, images/s, and mean batch size and forward
    time (ms) from the /metrics counters `after` minus `before`."""
    result = RunResult(label, batch, requests=sum(statuses.values()), wall_s=wall_s, stopped_early=stopped)
    result.ok = statuses.get("200", 0)
    result.rejected_429 = statuses.get("429", 0)
    result.errors = {status: n for status, n in sorted(statuses.items()) if status not in ("200", "429")}
    result.images_per_s = result.ok / wall_s if wall_s > 0 else 0.0
    if latencies:
        p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
        result.latency_ms = {"p50": p50, "p95": p95, "p99": p99, "mean": float(np.mean(latencies))}
    delta = {name: after.get(name, 0.0) - before.get(name, 0.0) for name in after}
    forwards = delta.get("dcpsfr_batch_size_count", 0.0)
    if forwards > 0:
        result.forwards = int(forwards)
        result.mean_batch = delta["dcpsfr_batch_size_sum"] / forwards
    if delta.get("predict_count", 0.0) > 0:
        result.forward_ms = 1000.0 * delta["predict_sum"] / delta["predict_count"]
    for stage in ("decode", "queue", "predict", "encode"):
        values = [t[stage] for t in timings if stage in t]
        if values:
            result.stages_ms[stage] = float(np.mean(values))
    return result


# --- reporting -----------------------------------------------------------------------------------------------

COLUMNS = (
    f"{'run':>14} {'req':>5} {'ok':>5} {'429':>4} {'errors':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
    f" {'img/s':>7} {'batch':>6} {'fwd ms':>7}  mean stages per answer (ms)"
)


def table_row(run: RunResult) -> str:
    """One aligned table line for a run (see COLUMNS); missing figures print as '-'."""
    lat = run.latency_ms
    errors = sum(run.errors.values())

    def num(value: float | None, digits: int = 1) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    stages = " ".join(f"{k}={v:.0f}" for k, v in run.stages_ms.items())
    return (
        f"{run.label:>14} {run.requests:5d} {run.ok:5d} {run.rejected_429:4d} {errors:8d}"
        f" {num(lat.get('p50')):>8} {num(lat.get('p95')):>8} {num(lat.get('p99')):>8}"
        f" {run.images_per_s:7.2f} {num(run.mean_batch, 2):>6} {num(run.forward_ms):>7}  {stages}"
        + ("  (stopped by --max-seconds)" if run.stopped_early else "")
    )


def print_table(runs: list[RunResult]) -> None:
    """Print the table of all runs, the errors by status, a legend and each run's throughput relative to the first."""
    print()
    print(COLUMNS)
    for run in runs:
        print(table_row(run))
        if run.errors:
            print(f"{'':>14} errors by status: {run.errors}")
    print(
        "batch = images per model forward, fwd ms = mean time of one forward (both from the service's /metrics);"
        " latency is client-side, successful requests only"
    )
    if len(runs) > 1 and runs[0].images_per_s > 0:
        base = runs[0]
        for run in runs[1:]:
            ratio = run.images_per_s / base.images_per_s
            print(f"throughput {run.label} / {base.label}: {ratio:.2f}x")


# --- main ----------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line of `python -m bench.load` (counts at least 1, --compare not with --url)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.load", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    load = parser.add_argument_group("load")
    load.add_argument(
        "--requests", "-n", type=int, metavar="N", default=200, help="POST /inspect calls per run (default: 200)"
    )
    load.add_argument(
        "--concurrency", "-c", type=int, metavar="C", default=8, help="requests in flight at once (default: 8)"
    )
    load.add_argument("--warmup", type=int, default=None, help="unmeasured requests first (default: concurrency)")
    load.add_argument("--max-seconds", type=float, default=240, help="stop issuing requests after this (default: 240)")
    load.add_argument("--request-timeout-s", type=float, default=120, help="per request (default: 120)")
    load.add_argument("--format", choices=["json", "png"], default="json", help="answer format (default: json)")
    load.add_argument(
        "--images", type=Path, nargs="+", metavar="PATH", help="image files or folders (default: bottle_xs)"
    )
    load.add_argument("--synthetic", action="store_true", help="synthetic frames even when bottle_xs exists")
    load.add_argument("--references", type=int, metavar="K", default=4, help="reference images uploaded (default: 4)")
    load.add_argument("--image-size", type=int, nargs=2, default=[900, 900], metavar=("W", "H"), help="synthetic")
    load.add_argument("--product-id", default="bench", help="product to inspect (default: bench)")
    load.add_argument("--json", type=Path, help="also write the results to this JSON file")
    server = parser.add_argument_group("started servers (DCPSFR_* settings)")
    server.add_argument("--config", default="tiny", help="DCPSFR_MODEL_CONFIG (default: tiny, random weights)")
    server.add_argument("--random-init", action="store_true", help="DCPSFR_RANDOM_INIT: real size, random weights")
    server.add_argument("--device", default="auto", help="DCPSFR_DEVICE (default: auto; cpu, cuda, ...)")
    server.add_argument("--max-batch-size", type=int, metavar="B", default=8, help="DCPSFR_MAX_BATCH_SIZE (default: 8)")
    server.add_argument("--max-wait-ms", type=float, default=5.0, help="DCPSFR_MAX_WAIT_MS (default: 5)")
    server.add_argument("--queue-size", type=int, metavar="Q", default=64, help="DCPSFR_QUEUE_SIZE (default: 64)")
    server.add_argument("--server-log-level", default="warning", help="DCPSFR_LOG_LEVEL (default: warning)")
    server.add_argument("--start-timeout-s", type=float, default=600, help="wait for /readyz (default: 600)")
    server.add_argument(
        "--compare",
        action="store_true",
        help="one server per --batch-sizes value, same load, one table and the throughput ratio",
    )
    server.add_argument(
        "--batch-sizes", type=int, metavar="B", nargs="+", default=[1, 8], help="for --compare (default: 1 8)"
    )
    remote = parser.add_argument_group("an already running service")
    remote.add_argument("--url", help="bench this service instead of starting one (no --compare)")
    remote.add_argument("--api-key", help="sent as X-API-Key (with --url)")
    remote.add_argument(
        "--upload-references", action="store_true", help="with --url: (re)upload the product's references"
    )
    args = parser.parse_args(argv)
    if args.url and args.compare:
        parser.error("--compare starts its own servers; it cannot be used with --url")
    for name in ("requests", "concurrency", "references", "max_batch_size", "queue_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if min(args.batch_sizes) < 1:
        parser.error("--batch-sizes must be at least 1")
    args.warmup = args.concurrency if args.warmup is None else args.warmup
    return args


def raise_on_sigterm() -> None:
    """So that `finally` blocks (stopping the servers) also run when this process is terminated."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))


def main(argv: list[str] | None = None) -> None:
    """Build the workload, bench the --url service or one started server
    per batch size, print the table and optionally write JSON."""
    args = parse_args(argv)
    raise_on_sigterm()
    workload = build_workload(args)
    print(f"images: {workload.source}: {len(workload.references)} references, {len(workload.frames)} frames")
    print(
        f"load: {args.requests} requests, concurrency {args.concurrency}, warm-up {args.warmup}, format={args.format}"
    )
    runs: list[RunResult] = []
    if args.url:
        print(f"run: {args.url}")
        runs.append(bench_url(args.url.rstrip("/"), args, workload, "remote", None, args.upload_references))
    else:
        batch_sizes = args.batch_sizes if args.compare else [args.max_batch_size]
        random = " random-init" if args.random_init else ""
        print(f"servers: config={args.config}{random} device={args.device} max_wait_ms={args.max_wait_ms}")
        print(f"  queue_size={args.queue_size} cpus={os.cpu_count()}")
        with tempfile.TemporaryDirectory(prefix="bench-service-") as data_dir:
            for batch in batch_sizes:
                print(f"run: MAX_BATCH_SIZE={batch} (starting the server)")
                with running_server(args, Path(data_dir), batch) as url:
                    runs.append(bench_url(url, args, workload, f"max_batch={batch}", batch, create=True))
                print(table_row(runs[-1]))
    print_table(runs)
    if args.json:
        args.json.write_text(json.dumps([asdict(run) for run in runs], indent=2))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted; the servers were stopped")
