"""`python -m service.client` as operators run it, against the real service (container command and environment,
`tiny` config: random weights, so scores mean nothing). Includes killing `watch` with SIGKILL mid-run and
starting it while the service is down."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.camera import start_pausing_writer
from tests.helpers.deployment import CAMERA_KEY, DeployedService, start_deployed_service
from tests.helpers.processes import REPO, free_port, start_process
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.e2e

PRODUCT = "bottle-line1"
TIMEOUT_S = 180


def client_env(service: DeployedService, key: str = CAMERA_KEY) -> dict[str, str]:
    return {**os.environ, "DCPSFR_CLIENT_URL": service.url, "DCPSFR_CLIENT_API_KEY": key}


def client(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "service.client", *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


def inspections_total(service: DeployedService) -> float:
    """dcpsfr_inspections_total summed over verdicts, read from the service's /metrics."""
    text = httpx.get(f"{service.url}/metrics", headers={"X-API-Key": CAMERA_KEY}, timeout=10).text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    return sum(sample.value for sample in families["dcpsfr_inspections"].samples if sample.name.endswith("_total"))


@pytest.fixture(scope="module")
def product(deploy_service: DeployedService, bottle_dir: Path) -> str:
    good = sorted((bottle_dir / "train" / "good").glob("*.png"))[:2]
    done = client("references", "--product", PRODUCT, *map(str, good), env=client_env(deploy_service))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["n_references"] == 2
    return PRODUCT


def copy_frames(bottle_dir: Path, folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted((bottle_dir / "test").glob("*/*.png"))
    copies = []
    for i in range(count):
        source = sources[i % len(sources)]
        copies.append(Path(shutil.copy(source, folder / f"{i:03d}-{source.parent.name}-{source.name}")))
    return copies


def test_inspect_writes_results_and_masks(
    deploy_service: DeployedService, product: str, bottle_dir: Path, tmp_path: Path
):
    frames = [*sorted((bottle_dir / "test").glob("*/000.png")), bottle_dir / "test" / "good" / "001.png"]
    assert [frame.name for frame in frames] == ["000.png", "000.png", "001.png"]  # two folders, one name
    args = ["inspect", "--product", product, "--out", str(tmp_path), *map(str, frames)]
    done = client(*args, env=client_env(deploy_service))
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [Path(line["file"]).name for line in lines] == [frame.name for frame in frames]
    assert all(line["mode"].endswith("(random weights)") for line in lines)
    assert all({"regions", "n_regions", "rule"} <= set(line) for line in lines)  # defect regions and the verdict's rule
    for frame, stem in zip(frames, ["000", "000-2", "001"], strict=True):
        record = json.loads((tmp_path / f"{stem}.json").read_text())
        assert record["product_id"] == product and record["source"]["file"] == str(frame)
        assert len(record["result"]["regions"]) <= record["result"]["n_regions"]
        with Image.open(tmp_path / record["mask_png"]) as mask, Image.open(frame) as image:
            assert mask.size == image.size


def test_bad_key_and_unknown_product_are_clear_errors(deploy_service: DeployedService, product: str, bottle_dir: Path):
    frame = str(next((bottle_dir / "test").glob("*/*.png")))
    wrong_key = client("inspect", "--product", product, frame, env=client_env(deploy_service, key="wrong"))
    assert wrong_key.returncode == 2 and "HTTP 403: invalid API key" in wrong_key.stderr
    unknown = client("inspect", "--product", "no-such-product", frame, env=client_env(deploy_service))
    assert unknown.returncode == 2 and "unknown product 'no-such-product'" in unknown.stderr


def test_watch_killed_mid_run_loses_nothing_and_resends_at_most_the_frame_in_flight(
    deploy_service: DeployedService, product: str, bottle_dir: Path, tmp_path: Path
):
    frames = copy_frames(bottle_dir, tmp_path / "frames", 8)
    out = tmp_path / "out"
    before = inspections_total(deploy_service)
    args = ["watch", str(tmp_path / "frames"), "--product", product, "--out", str(out), "--poll", "0.1"]
    first = start_process(
        [sys.executable, "-m", "service.client", *args], client_env(deploy_service), tmp_path / "first.log"
    )
    try:
        wait_for(lambda: list(out.glob("*.json")), "the first result", TIMEOUT_S)
    finally:
        first.popen.send_signal(signal.SIGKILL)
        first.popen.wait(timeout=30)
    done_before_restart = len(list(out.glob("*.json")))

    second = client(*args, "--once", env=client_env(deploy_service))
    assert second.returncode == 0, second.stderr

    results = sorted(out.glob("[!.]*.json"))
    assert len(results) == len(frames), f"{len(results)} results for {len(frames)} frames"
    keys = [json.loads(path.read_text())["source"]["key"] for path in results]
    assert sorted(key.split("|")[0] for key in keys) == sorted(frame.name for frame in frames)
    sent = inspections_total(deploy_service) - before
    assert len(frames) <= sent <= len(frames) + 1, f"{sent} inspections for {len(frames)} frames"
    print(f"{done_before_restart} frames finished before SIGKILL; {sent} requests for {len(frames)} frames")


def test_watch_waits_for_a_service_that_is_down(
    deploy_service: DeployedService, product: str, bottle_dir: Path, tmp_path: Path
):
    """Started before its service: connection refused is retried with backoff until the service is up."""
    frames = copy_frames(bottle_dir, tmp_path / "frames", 2)
    port = free_port()
    env = {**client_env(deploy_service), "DCPSFR_CLIENT_URL": f"http://127.0.0.1:{port}"}
    args = ["watch", str(tmp_path / "frames"), "--product", product, "--out", str(tmp_path / "out"), "--once"]
    watcher = start_process([sys.executable, "-m", "service.client", *args], env, tmp_path / "watch.log")
    late = None
    try:
        wait_for(lambda: "ConnectError" in watcher.log_tail(), "the client's first retry", TIMEOUT_S)
        assert watcher.popen.poll() is None, watcher.log_tail()
        late = start_deployed_service(deploy_service.data_dir.parent, port)  # the same data dir: the product is known
        assert watcher.popen.wait(timeout=TIMEOUT_S) == 0, watcher.log_tail()
    finally:
        watcher.stop()
        if late:
            late.process.stop()
    assert len(list((tmp_path / "out").glob("*.json"))) == len(frames)
    assert "retrying in" in watcher.log_tail()


def test_watch_once_waits_for_pausing_writers_and_rejects_a_bad_file_once(
    deploy_service: DeployedService, product: str, bottle_dir: Path, tmp_path: Path
):
    """Real writers pause mid-file for longer than the settle time (PNG) and shorter (TIFF): each frame gets one
    result and no error record; a file that is not an image is rejected once, under its own name, and `--once`
    exits 1; names the service refuses or marks as temporary are never sent."""
    frames, out = tmp_path / "frames", tmp_path / "out"
    frames.mkdir()
    source = sorted((bottle_dir / "test").glob("*/*.png"))[0]
    png = source.read_bytes()
    with Image.open(source) as image:
        tiff_buffer = io.BytesIO()
        image.save(tiff_buffer, format="TIFF")
        image.save(frames / "refused.webp", format="WEBP")
    (frames / "notes.png").write_text("not an image")
    (frames / "unfinished.png.part").write_bytes(png)
    before = inspections_total(deploy_service)
    writers = [
        start_pausing_writer(frames / "slow.png", png, pause_s=4.0),  # longer than the default settle time (2 s)
        start_pausing_writer(frames / "short.tif", tiff_buffer.getvalue(), pause_s=0.5),
    ]
    try:
        args = ["watch", str(frames), "--product", product, "--out", str(out), "--once", "--poll", "0.1"]
        first = client(*args, env=client_env(deploy_service))
    finally:
        for writer in writers:
            writer.join(TIMEOUT_S)
    assert first.returncode == 1, f"a rejected frame must make --once fail:\n{first.stderr}"
    written = sorted(path.name for path in out.glob("*.json"))
    assert written == ["notes.error.json", "short.json", "slow.json"], first.stderr
    assert json.loads((out / "notes.error.json").read_text())["status"] == 415
    for name, data in (("slow", png), ("short", tiff_buffer.getvalue())):
        assert json.loads((out / f"{name}.json").read_text())["source"]["size"] == len(data)
    assert inspections_total(deploy_service) - before == 2

    again = client(*args, env=client_env(deploy_service))
    assert again.returncode == 0, again.stderr
    assert sorted(path.name for path in out.glob("*.json")) == written, "a finished frame was recorded again"


def test_inspect_with_one_bad_file_inspects_the_others(
    deploy_service: DeployedService, product: str, bottle_dir: Path, tmp_path: Path
):
    good = sorted((bottle_dir / "test").glob("*/*.png"))[:3]
    bad = tmp_path / "b.png"
    bad.write_text("not an image")
    files = [good[0], bad, *good[1:]]
    done = client("inspect", "--product", product, *map(str, files), env=client_env(deploy_service))
    assert done.returncode == 1, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["file"] for line in lines] == [str(path) for path in files]
    assert [line.get("status") for line in lines] == [None, 415, None, None]
    assert all(isinstance(lines[i]["score"], float) for i in (0, 2, 3))
    assert "b.png" in lines[1]["error"]


def test_watch_sends_every_frame_whatever_its_name_and_deletes_only_those_with_a_result(
    deploy_service: DeployedService, product: str, bottle_dir: Path, tmp_path: Path
):
    """A name that is not UTF-8, one that loses characters to its stem (and the plain name it used to collide
    with), and a file that is not an image, under `--delete-sent`: each image gets its own result and is deleted;
    the rejected file stays. Then one fixed name rewritten at the same size and mtime: each rewrite is sent."""
    frames, out = tmp_path / "frames", tmp_path / "out"
    frames.mkdir()
    sources = sorted((bottle_dir / "test").glob("*/*.png"))[:3]
    with open(os.path.join(os.fsencode(frames), b"caf\xe9.png"), "wb") as handle:
        handle.write(sources[0].read_bytes())
    (frames / "瓶.png").write_bytes(sources[1].read_bytes())
    (frames / "frame.png").write_bytes(sources[2].read_bytes())
    (frames / "notes.png").write_text("not an image")

    def watch_once(folder: Path, results: Path, *extra: str) -> subprocess.CompletedProcess:
        args = ["watch", str(folder), "--product", product, "--out", str(results), "--once", "--poll", "0.1"]
        return client(*args, "--settle", "0.2", *extra, env=client_env(deploy_service))

    first = watch_once(frames, out, "--delete-sent")
    assert first.returncode == 1, first.stderr
    assert [path.name for path in frames.iterdir()] == ["notes.png"], first.stderr
    records = {path.name: json.loads(path.read_text()) for path in out.glob("[!.]*.json")}
    assert sorted(Path(record["source"]["file"]).name for record in records.values()) == sorted(
        ["caf\\xe9.png", "瓶.png", "frame.png", "notes.png"]
    )
    assert records["frame.json"]["source"]["file"] == str(frames / "frame.png")
    assert records["notes.error.json"]["status"] == 415
    assert all("score" in record["result"] for name, record in records.items() if not name.endswith(".error.json"))

    fixed = tmp_path / "fixed" / "frame.bmp"
    fixed.parent.mkdir()
    with Image.open(sources[0]) as image:
        rgb = image.convert("RGB")
    digests = set()
    for shade in (0, 40, 80):
        buffer = io.BytesIO()
        Image.blend(rgb, Image.new("RGB", rgb.size, (shade, shade, shade)), 0.5).save(buffer, format="BMP")
        fixed.write_bytes(buffer.getvalue())  # one size for every shade: an uncompressed BMP
        os.utime(fixed, ns=(10**18, 10**18))
        done = watch_once(fixed.parent, tmp_path / "fixed-out")
        assert done.returncode == 0, done.stderr
        digests |= {
            json.loads(path.read_text())["source"]["digest"] for path in (tmp_path / "fixed-out").glob("*.json")
        }
    assert len(digests) == 3, "a rewrite at the same size and mtime was not sent"
