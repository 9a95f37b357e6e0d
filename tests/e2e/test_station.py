"""`python -m station run` as a line runs it: a real service (tiny config: random weights, so the thresholds are set
by hand between the two frames' scores), a folder camera, and PLCs on all three protocols: a pymodbus client, an
asyncua client and an MQTT client through a real Mosquitto broker (when the binary is there). One service and one
station for the module; the last test stops the service."""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from station.codes import ErrorCode
from station.config import load_config
from station.handshake import Handshake, ProductTable, State
from station.outputs import ResultsFile
from station.run import make_camera, make_inspector
from tests.helpers.mosquitto import MOSQUITTO, Broker, Listener, needs_mosquitto
from tests.helpers.opc import OpcPlc
from tests.helpers.plc import Plc
from tests.helpers.processes import Process, ServiceProcess, free_port, running_service, start_process
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.e2e

PRODUCTS = {1: "bottle-a", 2: "bottle-b", 3: "never-uploaded"}


def score(service: ServiceProcess, product: str, image: Path) -> float:
    files = [("images", (image.name, image.read_bytes(), "image/png"))]
    answer = service.client.post("/inspect", data={"product_id": product}, files=files)
    assert answer.status_code == 200, answer.text
    return answer.json()["results"][0]["score"]


@dataclass
class Line:
    """A real service, the station as a process in front of it, and the PLC connected to the station."""

    service: ServiceProcess
    root: Path
    good: Path  # the frame the hand-set thresholds call OK
    bad: Path
    broker: Broker | None = None  # None: no mosquitto binary, the station runs without MQTT
    port: int = field(default_factory=free_port)
    opcua_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    station: Process | None = None
    plc: Plc | None = None

    @property
    def frames(self) -> Path:
        return self.root / "frames"

    @property
    def results(self) -> Path:
        return self.root / "results.jsonl"

    def start_station(self) -> None:
        """Write station.yaml, start `python -m station run` and connect the PLC once it listens."""
        self.frames.mkdir(exist_ok=True)
        config = {
            "station": "line1-st3",
            "service": {"url": self.service.url, "allow_random_weights": True},  # the tiny config
            # each test writes its frame before the trigger, while the station may still be starting
            "camera": {
                "kind": "folder",
                "name": "top",
                "folder": str(self.frames),
                "delete_taken": True,
                "stale_s": 60,
            },
            "protocols": {
                "modbus": {"host": "127.0.0.1", "port": self.port},
                "opcua": {"host": "127.0.0.1", "port": self.opcua_port},
                **({"mqtt": {"host": "127.0.0.1", "port": self.broker.port}} if self.broker else {}),
            },
            "products": {"table": PRODUCTS, "active": 1},
            "handshake": {"acquire_timeout_s": 2, "inspect_timeout_s": 60, "acknowledge": True},
            "outputs": {
                "results_file": str(self.results),
                "metrics_port": self.metrics_port,
                "metrics_host": "127.0.0.1",
            },
        }
        (self.root / "station.yaml").write_text(yaml.safe_dump(config))
        command = [sys.executable, "-m", "station", "run", "--config", str(self.root / "station.yaml")]
        self.station = start_process(command, dict(os.environ), self.root / f"station-{time.monotonic_ns()}.log")
        self.plc = wait_for(self.connect, "the station's Modbus server", 120)

    def connect(self) -> Plc | None:
        if not self.station.alive():
            pytest.fail(f"the station exited:\n{self.station.log_tail()}")
        try:
            return Plc(self.port)
        except AssertionError:
            return None

    def stop_station(self, sig: int = signal.SIGTERM) -> int:
        self.plc.close()
        return self.station.stop(sig)

    @property
    def opcua_endpoint(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.opcua_port}/"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"


@pytest.fixture(scope="module")
def line(tmp_path_factory, bottle_dir: Path):
    """Two products on a real service, their thresholds set between a good and a broken bottle's scores."""
    root = tmp_path_factory.mktemp("station-e2e")
    good, bad = bottle_dir / "test" / "good" / "000.png", bottle_dir / "test" / "broken_large" / "000.png"
    with running_service(root / "service") as service:
        references = [
            ("images", (p.name, p.read_bytes(), "image/png"))
            for p in sorted((bottle_dir / "train" / "good").glob("*.png"))[:2]
        ]
        for product in ("bottle-a", "bottle-b"):
            assert service.client.post(f"/products/{product}/references", files=references).status_code == 201
            good_score, bad_score = score(service, product, good), score(service, product, bad)
            assert good_score != bad_score, "random weights gave both frames one score"
            threshold = (good_score + bad_score) / 2  # random weights: set by hand so the verdicts are known
            answer = service.client.put(f"/products/{product}/threshold", json={"threshold": threshold})
            assert answer.status_code == 200, answer.text
        if good_score > bad_score:  # random weights may rank them either way: the lower score is the OK frame
            good, bad = bad, good
        broker = Broker(root).start() if MOSQUITTO else None
        line = Line(service, root, good, bad, broker)
        line.start_station()
        try:
            yield line
        finally:
            returncode = line.stop_station()
            if broker:
                broker.kill()
        assert returncode == 0, line.station.log_tail()


def show(frames: Path, image: Path, name: str) -> None:
    """The camera writes its frame for the next trigger."""
    shutil.copy(image, frames / name)


def test_a_good_bottle_is_ok_and_a_broken_one_ng(line):
    plc, frames, good, bad, results = line.plc, line.frames, line.good, line.bad, line.results
    show(frames, good, "p1.png")
    inputs, registers = plc.inspect(part_id=100001)
    assert {name for name, on in inputs.items() if on} == {"RESULT_READY", "OK"}
    assert (registers["PART_ID"], registers["ERROR_CODE"], registers["PRODUCT_INDEX"]) == (100001, 0, 1)
    assert registers["SCORE"] < registers["THRESHOLD"]
    show(frames, bad, "p2.png")
    inputs, registers = plc.inspect(part_id=100002)
    assert {name for name, on in inputs.items() if on} == {"RESULT_READY", "NG", "REJECT"}
    assert registers["SCORE"] > registers["THRESHOLD"] and registers["SEQUENCE"] == 2
    assert list(frames.iterdir()) == [], "a taken frame is deleted (delete_taken)"
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert [(line["part_id"], line["verdict"], line["product_id"]) for line in lines] == [
        ("100001", "OK", "bottle-a"),
        ("100002", "NG", "bottle-a"),
    ]
    assert {"acquire", "prepare", "request", "decode", "queue", "predict", "encode", "output", "total"} <= set(
        lines[0]["stage_ms"]
    )


def test_a_trigger_without_a_frame_is_a_camera_error_never_ok(line):
    plc = line.plc
    # no file appears within the 2 s acquire timeout
    inputs, registers = plc.inspect(part_id=100003, timeout_s=60)
    assert {name for name, on in inputs.items() if on} == {"RESULT_READY", "ERROR", "REJECT"}
    assert registers["ERROR_CODE"] == ErrorCode.CAMERA_TIMEOUT and math.isnan(registers["SCORE"])


def test_changeover_between_two_products_is_confirmed_and_an_unknown_one_refused(line):
    plc, frames, good, results = line.plc, line.frames, line.good, line.results
    assert plc.change_product(2)["ACTIVE_PRODUCT"] == 2
    show(frames, good, "p4.png")
    inputs, registers = plc.inspect(part_id=100004)
    assert inputs["OK"] and registers["PRODUCT_INDEX"] == 2
    assert json.loads(results.read_text().splitlines()[-1])["product_id"] == "bottle-b"
    refused = plc.change_product(3)  # in the station's table, but the service has no references for it
    assert (refused["ACTIVE_PRODUCT"], refused["CHANGEOVER_FAILED"]) == (2, True)
    assert plc.change_product(1)["ACTIVE_PRODUCT"] == 1


def test_the_stage_times_are_exported(line):
    families = {family.name: family for family in text_string_to_metric_families(httpx.get(line.metrics_url).text)}
    counts = {
        s.labels["stage"]: s.value for s in families["station_stage_seconds"].samples if s.name.endswith("_count")
    }
    assert counts["predict"] == 3 and counts["total"] == 4 and counts["acquire"] == 3
    verdicts = {
        (s.labels["verdict"], s.labels["code"]): s.value
        for s in families["station_results"].samples
        if s.name.endswith("_total")
    }
    assert verdicts == {("OK", "NONE"): 2, ("NG", "NONE"): 1, ("ERROR", "CAMERA_TIMEOUT"): 1}


def test_sigterm_finishes_the_part_in_progress(line):
    """SIGTERM right after a trigger: the part still gets its verdict (results file) and the station exits 0."""
    plc = line.plc
    show(line.frames, line.good, "p5.png")
    plc.trigger(100005)
    assert not plc.inputs()["READY"]
    assert line.stop_station() == 0, line.station.log_tail()
    last = json.loads(line.results.read_text().splitlines()[-1])
    assert (last["part_id"], last["verdict"]) == ("100005", "OK")
    line.start_station()  # the next test's station, on the same ports and results file


def multi_view_station(line, root: Path) -> tuple[Handshake, dict[str, Path]]:
    """An in-process station whose part type `bottle-2v` is seen by two folder cameras, `top` judged as product
    bottle-a and `side` as bottle-b (the module's service and hand-set thresholds)."""
    folders = {name: root / name for name in ("top", "side")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    raw = {
        "station": "line1-st4",
        "service": {"url": line.service.url, "allow_random_weights": True},
        "camera": {"kind": "folder", "name": "top", "folder": str(folders["top"]), "delete_taken": True, "stale_s": 60},
        "cameras": [
            {"kind": "folder", "name": "side", "folder": str(folders["side"]), "delete_taken": True, "stale_s": 60}
        ],
        "views": {
            "bottle-2v": [
                {"name": "top-ring", "camera": "top", "product": "bottle-a"},
                {"name": "side-bar", "camera": "side", "product": "bottle-b"},
            ]
        },
        "trigger": {"kind": "modbus", "port": free_port()},
        "products": {"table": {1: "bottle-2v"}, "active": 1},
        "handshake": {"acquire_timeout_s": 1, "inspect_timeout_s": 60, "acknowledge": False},
        "outputs": {"results_file": str(root / "results.jsonl")},
    }
    (root / "station.yaml").write_text(yaml.safe_dump(raw))
    config = load_config(root / "station.yaml")
    camera = make_camera(config)
    inspector = make_inspector(config, camera)
    inspector.check_product("bottle-2v", 60)  # every view's product is known to the service
    products = ProductTable(dict(config.products.table))
    handshake = Handshake(
        camera, inspector, products, 1, config.handshake.settings(), on_result=[ResultsFile(root / "results.jsonl")]
    )
    return handshake, folders


def inspect_part(handshake: Handshake, part_id: str) -> dict:
    assert handshake.trigger(part_id)
    assert handshake.run_next(0)
    return handshake.snapshot().last.record()


def test_a_part_seen_in_two_views_gets_one_verdict_with_each_views_evidence(line, tmp_path):
    handshake, folders = multi_view_station(line, tmp_path)
    show(folders["top"], line.good, "a.png")
    show(folders["side"], line.good, "a.png")
    good = inspect_part(handshake, "MV-1")
    show(folders["top"], line.good, "b.png")
    show(folders["side"], line.bad, "b.png")  # one bad view is enough
    bad = inspect_part(handshake, "MV-2")
    assert (good["verdict"], bad["verdict"]) == ("OK", "NG")
    for record in (good, bad):
        views = {view["view"]: view for view in record["views"]}
        assert set(views) == {"top-ring", "side-bar"}
        assert (views["top-ring"]["product_id"], views["side-bar"]["product_id"]) == ("bottle-a", "bottle-b")
        assert all(view["inspection_id"] and view["threshold"] is not None for view in views.values())
    assert [view["verdict"] for view in bad["views"]] == ["OK", "NG"]
    assert len(bad["views"][1]["regions"]) <= bad["views"][1]["n_regions"]  # the service's regions, as listed
    recent = line.service.client.get("/products/bottle-b/inspections").json()["inspections"]
    assert bad["views"][1]["inspection_id"] in {inspection["inspection_id"] for inspection in recent}
    written = [json.loads(row) for row in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [row["verdict"] for row in written] == ["OK", "NG"] and written[1]["views"] == bad["views"]


def test_a_part_with_a_missing_view_is_an_error_never_ok(line, tmp_path):
    handshake, folders = multi_view_station(line, tmp_path)
    show(folders["top"], line.good, "c.png")  # the side camera gives nothing within the acquire timeout
    missing = inspect_part(handshake, "MV-3")
    assert (missing["verdict"], missing["code"]) == ("ERROR", ErrorCode.CAMERA_TIMEOUT)
    assert "view side-bar" in missing["message"] and missing["reject"]
    show(folders["side"], line.good, "d.png")  # the top camera's frame was taken by MV-3: now top is missing
    assert inspect_part(handshake, "MV-4")["verdict"] == "ERROR"


async def opc_plc(line: Line) -> OpcPlc:
    """An OPC UA client connected to the station (its server may start a moment after the Modbus one)."""
    for _ in range(600):
        plc = OpcPlc(line.opcua_endpoint)
        try:
            return await plc.__aenter__()
        except (OSError, TimeoutError):
            await asyncio.sleep(0.1)
    pytest.fail(f"no OPC UA server at {line.opcua_endpoint}:\n{line.station.log_tail()}")


def test_opcua_start_single_job_gives_ok_then_ng_in_events_and_variables(line):
    async def scenario():
        plc = await opc_plc(line)
        try:
            show(line.frames, line.good, "o1.png")
            job_id, error = await plc.start_job(part_id="O-1")
            assert error == 0 and job_id == "line1-st3-1"
            (event,) = await plc.wait_events(1, timeout_s=60)
            assert (event.Verdict, event.ResultState, event.PartId, event.JobId) == ("OK", 1, "O-1", job_id)
            assert {"acquire", "predict", "total"} <= set(json.loads(event.ProcessingTimes))
            assert (await plc.read("OK", "ErrorCode", "ProductId"))["OK"] is True
            assert await plc.acknowledge() is True
            await plc.wait("Ready", True)
            show(line.frames, line.bad, "o2.png")
            assert (await plc.start_job(part_id="O-2", product_id="bottle-b"))[1] == 0
            second = (await plc.wait_events(2, timeout_s=60))[1]
            assert (second.Verdict, second.Reject, second.ProductId) == ("NG", True, "bottle-b")
            assert second.Score > second.Threshold
            assert await plc.acknowledge() is True
        finally:
            await plc.__aexit__(None, None, None)

    asyncio.run(scenario())
    last = json.loads(line.results.read_text().splitlines()[-1])
    assert (last["part_id"], last["verdict"]) == ("O-2", "NG")


@needs_mosquitto
def test_mqtt_trigger_gives_a_result_on_the_result_topic(line):
    listener = Listener(line.broker.port, "inspection/line1-st3/#")
    try:
        show(line.frames, line.good, "m1.png")
        listener.publish("inspection/line1-st3/cmd/trigger", '{"part_id": "M-1"}')
        (result,) = wait_for(lambda: listener.on("/result") or None, "the MQTT result", 60)
        assert (result["part_id"], result["verdict"], result["product_id"]) == ("M-1", "OK", "bottle-a")
        assert result["stage_ms"]["predict"] > 0
        listener.publish("inspection/line1-st3/cmd/acknowledge")
        wait_for(lambda: line.plc.inputs()["READY"], "READY after the MQTT acknowledge")
    finally:
        listener.close()


def test_with_the_service_stopped_the_station_answers_error_and_keeps_running(line):
    plc, station = line.plc, line.station
    assert line.service.stop() in (0, -signal.SIGTERM)
    show(line.frames, line.good, "p6.png")
    inputs, registers = plc.inspect(part_id=100006)
    assert {name for name, on in inputs.items() if on} == {"RESULT_READY", "ERROR", "REJECT"}
    assert registers["ERROR_CODE"] == ErrorCode.SERVICE_UNREACHABLE
    assert station.alive() and plc.registers()["STATE"] == State.READY
    assert "ERROR 3 SERVICE_UNREACHABLE" in station.log_tail(0)


def test_with_the_service_stopped_opcua_and_mqtt_say_error_with_its_code(line):
    """Runs after the service was stopped: both other protocols show ERROR 3, never OK."""

    async def scenario():
        plc = await opc_plc(line)
        try:
            show(line.frames, line.good, "o7.png")
            assert (await plc.start_job(part_id="O-7"))[1] == 0
            (event,) = await plc.wait_events(1, timeout_s=60)
            assert (event.Verdict, event.ResultState, event.ErrorCode) == ("ERROR", 4, ErrorCode.SERVICE_UNREACHABLE)
            values = await plc.read("Error", "OK", "ErrorCode")
            assert values == {"Error": True, "OK": False, "ErrorCode": ErrorCode.SERVICE_UNREACHABLE}
            assert await plc.acknowledge() is True
        finally:
            await plc.__aexit__(None, None, None)

    asyncio.run(scenario())
    if line.broker is None:
        pytest.skip("MQTT part: the mosquitto binary is absent (Debian package `mosquitto`)")
    listener = Listener(line.broker.port, "inspection/line1-st3/#")
    try:
        show(line.frames, line.good, "m8.png")
        wait_for(lambda: line.plc.inputs()["READY"], "READY")
        listener.publish("inspection/line1-st3/cmd/trigger", '{"part_id": "M-8"}')
        (result,) = wait_for(lambda: listener.on("/result") or None, "the MQTT result", 60)
        assert (result["verdict"], result["code"], result["reject"]) == ("ERROR", ErrorCode.SERVICE_UNREACHABLE, True)
        listener.publish("inspection/line1-st3/cmd/acknowledge")
    finally:
        listener.close()
    assert line.station.alive()
