"""The MQTT adapter against a real Mosquitto broker, the handshake behind it on fakes."""

from __future__ import annotations

import logging
import threading

import paho.mqtt.client as paho
import pytest

from station.camera import CameraTimeout
from station.codes import ErrorCode
from station.inspector import InspectFailed
from station.mqtt import MqttAdapter, Outbox, product_selector
from station.supervisor import Supervisor
from tests.helpers.mosquitto import Broker, Listener, needs_mosquitto
from tests.helpers.waiting import wait_for
from tests.station.conftest import BAD, GOOD


def test_the_outbox_drops_the_oldest_when_full_and_counts_it():
    outbox = Outbox(2)
    assert outbox.put(1, b"a") is None and outbox.put(2, b"b") is None
    assert outbox.put(3, b"c") == 1 and outbox.put(4, b"d") == 2
    assert (outbox.dropped, [key for key, _ in outbox.pending()]) == (2, [3, 4])
    outbox.done(3)
    assert outbox.pending() == [(4, b"d")]


def test_a_product_command_takes_an_index_or_an_id():
    assert [product_selector(p) for p in (b"2", b"cable", b'{"product": 1}', b'{"product": "bottle"}')] == [
        2,
        "cable",
        1,
        "bottle",
    ]
    for bad in (b"", b'{"product": null}'):
        with pytest.raises(ValueError):
            product_selector(bad)


class AckingClient:
    """A paho client whose broker acknowledges at once: its network thread runs on_publish while holding the
    client's own message lock, and publish() takes that lock, as paho does."""

    def __init__(self, adapter: MqttAdapter) -> None:
        self.adapter, self.messages, self.mid = adapter, threading.Lock(), 0

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> paho.MQTTMessageInfo:
        with self.messages:
            self.mid += 1
            info = paho.MQTTMessageInfo(self.mid)
            info.rc = paho.MQTT_ERR_SUCCESS
            network = threading.Thread(target=self.puback, args=(self.mid,))
            network.start()
            network.join(2)  # paho's publish waits on this lock while its network thread holds it
            assert not network.is_alive(), "on_publish could not run: the adapter held its lock over publish()"
        return info

    def puback(self, mid: int) -> None:
        self.adapter.on_publish(self, None, mid, None, None)


def test_a_result_acknowledged_during_publish_leaves_the_outbox_without_a_deadlock(make_station):
    handshake, _, _ = make_station()
    adapter = MqttAdapter(handshake, "line1-st3", "127.0.0.1", 1)
    adapter.client, adapter.connected = AckingClient(adapter), True
    adapter.outbox.put(7, b"{}")
    adapter.send(7, b"{}")
    assert adapter.outbox.pending() == [] and adapter.inflight == {}


@pytest.fixture
def broker(tmp_path):
    broker = Broker(tmp_path).start()
    yield broker
    broker.kill()


@pytest.fixture
def station(make_station, broker):
    """(adapter, handshake, inspector, listener): the worker running, the adapter connected, a listener on
    inspection/line1-st3/#."""
    made = []

    def make(limit: int = 1000, **settings):
        handshake, _, inspector = make_station(**{"acquire_timeout_s": 2, "inspect_timeout_s": 2, **settings})
        adapter = MqttAdapter(handshake, "line1-st3", "127.0.0.1", broker.port, outbox_limit=limit)
        handshake.on_result.append(adapter)
        stop = threading.Event()
        worker = threading.Thread(target=handshake.serve, args=(stop,), daemon=True)
        worker.start()
        listener = Listener(broker.port, "inspection/line1-st3/#")
        adapter.start()
        made.append((adapter, stop, worker, listener))
        return adapter, handshake, inspector, listener

    yield make
    for adapter, stop, worker, listener in made:
        listener.close()
        adapter.stop()
        stop.set()
        worker.join(10)


def no_frame(timeout_s: float):
    raise CameraTimeout("no frame")


def last_state(listener: Listener) -> dict:
    states = listener.on("/state")
    return states[-1] if states else {}


@needs_mosquitto
def test_commands_drive_the_handshake_and_results_and_state_are_published(station):
    _, _, inspector, listener = station()
    inspector.answers[:] = [GOOD, BAD]
    wait_for(lambda: last_state(listener).get("state") == "READY", "the READY state")
    listener.publish("inspection/line1-st3/cmd/trigger", '{"part_id": "P-1"}')
    (first,) = wait_for(lambda: listener.on("/result") or None, "the first result")
    assert (first["station"], first["part_id"], first["verdict"], first["code"], first["sequence"]) == (
        "line1-st3",
        "P-1",
        "OK",
        0,
        1,
    )
    assert {"acquire", "request", "total"} <= set(first["stage_ms"])
    wait_for(lambda: last_state(listener).get("result_ready"), "RESULT_READY in the state")
    assert last_state(listener)["verdict"] == "OK"
    listener.publish("inspection/line1-st3/cmd/acknowledge")
    wait_for(lambda: last_state(listener).get("state") == "READY", "READY after the acknowledge")
    listener.publish("inspection/line1-st3/cmd/trigger", '{"part_id": "P-2", "product": "cable"}')
    wait_for(lambda: len(listener.on("/result")) == 2, "the second result")
    second = listener.on("/result")[1]
    assert (second["verdict"], second["reject"], second["product_id"]) == ("NG", True, "cable")
    listener.publish("inspection/line1-st3/cmd/acknowledge")
    listener.publish("inspection/line1-st3/cmd/product", "cable")
    wait_for(lambda: last_state(listener).get("active_product") == "cable", "the changeover confirmed")
    assert [part.part_id for part in inspector.parts] == ["P-1", "P-2"]


@needs_mosquitto
def test_the_state_is_retained_for_a_late_subscriber(station, broker):
    _, _, _, listener = station()
    wait_for(lambda: last_state(listener).get("state") == "READY", "the READY state")
    late = Listener(broker.port, "inspection/line1-st3/state")
    try:
        wait_for(lambda: late.messages or None, "the retained state")
        assert late.messages[0][1]["state"] == "READY" and late.messages[0][2] is True
    finally:
        late.close()


@pytest.mark.parametrize("code", [ErrorCode.SERVICE_UNREACHABLE, ErrorCode.CAMERA_TIMEOUT])
@needs_mosquitto
def test_a_failure_is_published_as_error_with_its_code(station, code):
    _, handshake, inspector, listener = station(acknowledge=False)
    inspector.answers[:] = [InspectFailed(code, "down")]
    if code == ErrorCode.CAMERA_TIMEOUT:
        handshake.camera.behaviour = lambda timeout_s: (_ for _ in ()).throw(
            __import__("station.camera").camera.CameraTimeout("no frame")
        )
    handshake.trigger("P-7")
    (result,) = wait_for(lambda: listener.on("/result") or None, "the result")
    assert (result["verdict"], result["code"], result["error"], result["reject"]) == ("ERROR", code, code.name, True)
    wait_for(
        lambda: last_state(listener).get("error_code") == code or last_state(listener).get("sequence") == 1, "state"
    )


@needs_mosquitto
def test_results_made_while_the_broker_is_down_all_arrive_after_it_restarts(station, broker):
    adapter, handshake, inspector, listener = station(acknowledge=False)
    inspector.answers[:] = [GOOD] * 8
    for part in range(1, 3):
        assert handshake.trigger(f"P-{part}")
        wait_for(lambda part=part: len(listener.on("/result")) == part, f"result {part}")
    broker.kill()
    wait_for(lambda: not adapter.connected, "the station to see the broker gone")
    for part in range(3, 7):
        wait_for(lambda: handshake.snapshot().ready, "READY")
        assert handshake.trigger(f"P-{part}")
    wait_for(lambda: handshake.snapshot().last and handshake.snapshot().last.sequence == 6, "six results")
    assert len(adapter.outbox) == 4
    listener.close()
    broker.start()
    listener = Listener(broker.port, "inspection/line1-st3/result")
    try:
        wait_for(lambda: len(adapter.outbox) == 0, "the outbox emptied", 30)
        wait_for(lambda: {r["part_id"] for r in listener.on("/result")} >= {f"P-{n}" for n in range(3, 7)}, "P-3..6")
    finally:
        listener.close()
    assert adapter.outbox.dropped == 0


@needs_mosquitto
def test_a_full_outbox_drops_the_oldest_says_so_and_counts_it(station, broker, caplog):
    adapter, handshake, inspector, listener = station(limit=2, acknowledge=False)
    inspector.answers[:] = [GOOD] * 5
    wait_for(lambda: adapter.connected, "connected")
    broker.kill()
    wait_for(lambda: not adapter.connected, "the station to see the broker gone")
    with caplog.at_level(logging.ERROR, logger="station.mqtt"):
        for part in range(1, 5):
            wait_for(lambda: handshake.snapshot().ready, "READY")
            assert handshake.trigger(f"P-{part}")
        wait_for(lambda: handshake.snapshot().last and handshake.snapshot().last.sequence == 4, "four results")
    assert adapter.outbox.dropped == 2 and [key for key, _ in adapter.outbox.pending()] == [3, 4]
    assert sum("MQTT outbox full" in r.getMessage() for r in caplog.records) == 2
    assert handshake.metrics.registry.get_sample_value("station_outbox_dropped_total", {"protocol": "mqtt"}) == 2
    listener.close()
    broker.start()
    listener = Listener(broker.port, "inspection/line1-st3/result")
    try:
        wait_for(lambda: len(adapter.outbox) == 0, "the outbox emptied", 30)
        wait_for(lambda: {r["part_id"] for r in listener.on("/result")} >= {"P-3", "P-4"}, "P-3 and P-4")
    finally:
        listener.close()


@needs_mosquitto
def test_a_crashed_adapter_is_restarted_logged_and_counted(station, caplog, monkeypatch):
    adapter, handshake, inspector, listener = station(acknowledge=False)
    inspector.answers[:] = [GOOD]
    wait_for(lambda: adapter.connected, "connected")
    supervisor = Supervisor([], handshake.metrics, poll_s=0.05, backoff_s=0.05)
    supervisor.adapters.append(adapter)
    supervisor.thread = threading.Thread(target=supervisor.watch, daemon=True)
    supervisor.thread.start()
    original, calls = adapter.publish_state, []

    def crash_once(force: bool = False) -> None:
        calls.append(force)
        if len(calls) == 1:
            raise RuntimeError("injected crash")
        original(force)

    with caplog.at_level(logging.INFO, logger="station.supervisor"):
        monkeypatch.setattr(adapter, "publish_state", crash_once)
        wait_for(
            lambda: (
                handshake.metrics.registry.get_sample_value("station_protocol_restarts_total", {"protocol": "mqtt"})
                == 1
            ),
            "the restart",
        )
        wait_for(lambda: adapter.alive() and adapter.connected, "the adapter back")
    assert any("protocol mqtt stopped unexpectedly" in r.getMessage() for r in caplog.records)
    listener.publish("inspection/line1-st3/cmd/trigger", '{"part_id": "after"}')
    wait_for(lambda: [r["part_id"] for r in listener.on("/result")] == ["after"], "a result after the restart")
    supervisor.stopping.set()
    supervisor.thread.join(5)
