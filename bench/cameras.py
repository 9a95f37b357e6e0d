"""The station's throughput from a GenICam camera to the service and back to its outputs: Aravis's fake GigE Vision
camera on loopback (software trigger), a started service (tiny by default), the station in process (handshake,
multi-view camera and inspector, results file), at 1 and 4 views per part (4 views: the same camera four times,
as four lightings would be). Parts one after another, as a line triggers them.

    python -m bench.cameras [--parts 20] [--config tiny] [--json out.json]

Needs aravis-tools and Aravis's GObject bindings (see docs/cameras.md); the fake camera answers on 127.0.0.1, so
do not run it while the GenICam tests run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench import load
from station.genicam import CameraSettings, GenICamCamera, load_aravis
from station.handshake import Handshake, PartResult, ProductTable, Settings
from station.outputs import ResultsFile
from station.views import MultiViewCamera, MultiViewInspector, View

SERIAL = "BENCH01"
STAGES = ("acquire", "prepare", "request", "decode", "queue", "predict", "encode", "output", "total")


def start_fake_camera(log: Path) -> subprocess.Popen:
    """The fake camera on loopback, once discovery sees it."""
    aravis = load_aravis()
    with log.open("wb") as handle:
        process = subprocess.Popen(
            ["arv-fake-gv-camera-0.8", "-i", "127.0.0.1", "-s", SERIAL], stdout=handle, stderr=subprocess.STDOUT
        )
    for _ in range(100):
        aravis.update_device_list()
        if any(aravis.get_device_serial_nbr(i) == SERIAL for i in range(aravis.get_n_devices())):
            return process
        time.sleep(0.1)
    process.kill()
    sys.exit(f"error: the fake camera did not answer discovery:\n{log.read_text()}")


def upload_references(url: str, camera: GenICamCamera, products: list[str]) -> None:
    """Two of the camera's own frames as every view product's references."""
    references = [("images", (f"r{i}.png", camera.acquire(2.0).data, "image/png")) for i in range(2)]
    with httpx.Client(base_url=url, timeout=120) as client:
        for product in products:
            answer = client.post(f"/products/{product}/references", files=references)
            if answer.status_code != 201:
                sys.exit(f"error: references of {product}: {answer.status_code} {answer.text}")


def run_parts(url: str, camera: GenICamCamera, n_views: int, parts: int, results: Path) -> dict[str, object]:
    """`parts` parts of `n_views` views each through the station; parts/s, frames/s and the median stage times."""
    views = {"part": [View(f"v{i}", "cam", f"view{i}") for i in range(n_views)]}
    cameras = MultiViewCamera({"cam": camera}, views, "part")
    inspector = MultiViewInspector(url, None, "bench", views, "cam")
    settings = Settings(acquire_timeout_s=5, inspect_timeout_s=60, acknowledge=False)
    done: list[PartResult] = []
    handshake = Handshake(cameras, inspector, ProductTable({1: "part"}), 1, settings, on_result=[ResultsFile(results)])
    handshake.on_result.append(done.append)
    for part in range(2):  # warm-up: connections, the service's first batches
        handshake.trigger(f"warm-{part}")
        handshake.run_next(0)
    done.clear()
    started = time.perf_counter()
    for part in range(parts):
        handshake.trigger(f"P{part}")
        handshake.run_next(0)
    wall = time.perf_counter() - started
    inspector.close()
    verdicts = sorted({r.verdict.value for r in done})
    stage_ms = {s: statistics.median(r.stage_ms[s] for r in done if s in r.stage_ms) for s in STAGES}
    return {
        "views": n_views,
        "parts": parts,
        "parts_per_s": parts / wall,
        "frames_per_s": parts * n_views / wall,
        "verdicts": verdicts,
        "stage_ms_p50": stage_ms,
    }


def main(argv: list[str] | None = None) -> None:
    """Run both view counts and print one row each (stage medians in ms)."""
    parser = argparse.ArgumentParser(prog="python -m bench.cameras", description=__doc__)
    parser.add_argument("--parts", type=int, default=20, help="parts measured per view count (default: 20)")
    parser.add_argument("--config", default="tiny", help="the service's DCPSFR_MODEL_CONFIG (default: tiny)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    server_args = load.parse_args(["--config", args.config, "--device", "cpu"])
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-cameras-") as tmp:
        root = Path(tmp)
        fake = start_fake_camera(root / "fake.log")
        try:
            camera = GenICamCamera(SERIAL, "cam", settings=CameraSettings("Mono8", roi=(0, 0, 512, 512)))
            with load.running_server(server_args, root, 8) as url:
                upload_references(url, camera, [f"view{i}" for i in range(4)])
                for n_views in (1, 4):
                    rows.append(run_parts(url, camera, n_views, args.parts, root / "results.jsonl"))
            camera.close()
        finally:
            fake.kill()
            fake.wait()
    print(f"station bench: fake GigE Vision camera (Mono8 512x512) -> {args.config} service (cpu) -> results file")
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} CPUs")
    print("views  parts/s  frames/s  " + "  ".join(f"{s:>8}" for s in STAGES) + "   (stage medians, ms)")
    for row in rows:
        stages = "  ".join(f"{row['stage_ms_p50'][s]:8.1f}" for s in STAGES)
        print(f"{row['views']:5d}  {row['parts_per_s']:7.2f}  {row['frames_per_s']:8.2f}  {stages}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
