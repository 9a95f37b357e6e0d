"""The station's overhead: trigger -> result seen by the PLC over Modbus TCP, OPC UA and MQTT, against a direct
HTTP call to the same tiny service, interleaved (A, B, C, D, A, ...).

The station runs in this process (a camera that returns one PNG from memory, the real HTTP inspector, the three
adapters); each PLC is the protocol's client library, also in this process: Modbus polls the Sequence register,
OPC UA waits for the ResultReady event after StartSingleJob, MQTT publishes cmd/trigger and waits for the result
message through a real Mosquitto broker (skipped when the binary is absent).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import paho.mqtt.client as paho
from asyncua import Client
from paho.mqtt.enums import CallbackAPIVersion
from pymodbus.client import ModbusTcpClient

from bench import load
from bench.common import Section, p50, percentile, photo_like, png_bytes
from station.camera import Frame
from station.handshake import Handshake, ProductTable, Settings
from station.inspector import HttpInspector
from station.modbus import Coil, InputRegister, ModbusAdapter
from station.mqtt import MqttAdapter, no_delay
from station.opcua import NAMESPACE, OpcUaAdapter

TIMEOUT_S = 60.0


class MemoryCamera:
    """Gives the same PNG on every trigger (no camera time in the figures)."""

    name = "bench"

    def __init__(self, data: bytes) -> None:
        self.data = data

    def acquire(self, timeout_s: float) -> Frame:
        """The frame."""
        return Frame(self.data, "frame.png")

    def close(self) -> None:
        """Nothing to close."""


def run(args: argparse.Namespace) -> Section:
    """p50/p99 of trigger -> result over each protocol and of the direct POST /inspect; the station's overhead."""
    section = Section("station", f"station trigger -> result per protocol vs direct HTTP ({args.service_config})")
    references = [png_bytes(photo_like((256, 256), seed)) for seed in range(2)]
    frame = png_bytes(photo_like((256, 256), 100))
    n = 20 if args.quick else 100
    server_args = load.parse_args(["--config", args.service_config, "--device", "cpu", *args.server_flags])
    with (
        tempfile.TemporaryDirectory(prefix="bench-station-") as tmp,
        load.running_server(server_args, Path(tmp), 8) as url,
    ):
        http = httpx.Client(base_url=url, timeout=TIMEOUT_S)
        files = [("images", (f"ref{i}.png", data, "image/png")) for i, data in enumerate(references)]
        assert http.post("/products/bench/references", files=files).status_code == 201
        with LineStation(url, frame, Path(tmp)) as plcs:
            plcs["direct HTTP"] = lambda: direct(http, frame)
            times = interleave(plcs, n)
        http.close()
    base = p50(times["direct HTTP"])
    for name, values in times.items():
        overhead = "" if name == "direct HTTP" else f"   station overhead p50 {p50(values) - base:+6.1f} ms"
        figures = f"p50 {p50(values):6.1f} ms  p99 {percentile(values, 99):6.1f} ms  ({len(values)} parts)"
        section.rows.append(f"{name:12} {figures}{overhead}")
    section.data = {name: {"p50": p50(v), "p99": percentile(v, 99), "ms": v} for name, v in times.items()}
    return section


def interleave(plcs: dict[str, Callable[[], None]], n: int) -> dict[str, list[float]]:
    """Milliseconds per part of each PLC, round-robin, after two warm-up parts each."""
    for plc in plcs.values():
        plc()
        plc()
    times: dict[str, list[float]] = {name: [] for name in plcs}
    for _ in range(n):
        for name, plc in plcs.items():
            start = time.perf_counter()
            plc()
            times[name].append((time.perf_counter() - start) * 1000.0)
    return times


def listening(port: int) -> bool:
    """Whether something accepts connections on the loopback port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def direct(http: httpx.Client, frame: bytes) -> None:
    """One POST /inspect, as the station sends it."""
    answer = http.post("/inspect", data={"product_id": "bench"}, files=[("images", ("f.png", frame, "image/png"))])
    answer.raise_for_status()


class LineStation:
    """The station on free ports with the three adapters, and one PLC callable per protocol."""

    def __init__(self, url: str, frame: bytes, root: Path) -> None:
        self.url, self.frame, self.root = url, frame, root
        self.closers: list[Callable[[], None]] = []

    def __enter__(self) -> dict[str, Callable[[], None]]:
        inspector = HttpInspector(self.url, None, "bench", "bench", allow_random_weights=True)  # tiny / random init
        settings = Settings(acquire_timeout_s=TIMEOUT_S, inspect_timeout_s=TIMEOUT_S, acknowledge=False)
        handshake = Handshake(MemoryCamera(self.frame), inspector, ProductTable({1: "bench"}), 1, settings)
        stop = threading.Event()
        worker = threading.Thread(target=handshake.serve, args=(stop,), daemon=True)
        worker.start()
        self.closers.append(lambda: (stop.set(), worker.join(10), inspector.close()))
        plcs = {"Modbus TCP": self.modbus(handshake), "OPC UA": self.opcua(handshake)}
        mosquitto = shutil.which("mosquitto") or (
            "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
        )
        if mosquitto:
            plcs["MQTT"] = self.mqtt(handshake, mosquitto)
        return plcs

    def __exit__(self, *exc: object) -> None:
        for close in reversed(self.closers):
            close()

    def modbus(self, handshake: Handshake) -> Callable[[], None]:
        """Trigger coil, then poll the Sequence register until it changes."""
        adapter = ModbusAdapter(handshake, "127.0.0.1", load.free_port())
        adapter.start()
        client = ModbusTcpClient("127.0.0.1", port=adapter.port, timeout=5)
        assert client.connect()
        self.closers.append(lambda: (client.close(), adapter.stop()))

        def sequence() -> int:
            return client.read_input_registers(0, count=len(InputRegister), device_id=1).registers[
                InputRegister.SEQUENCE
            ]

        def part() -> None:
            before = sequence()
            client.write_coil(Coil.TRIGGER, True, device_id=1)
            deadline = time.monotonic() + TIMEOUT_S
            while sequence() == before:
                assert time.monotonic() < deadline, "no Modbus result"

        return part

    def opcua(self, handshake: Handshake) -> Callable[[], None]:
        """StartSingleJob, then wait for the ResultReady event."""
        adapter = OpcUaAdapter(handshake, "bench", "127.0.0.1", load.free_port())
        handshake.on_result.append(adapter)
        adapter.start()
        loop = asyncio.new_event_loop()
        client = Client(adapter.endpoint, timeout=TIMEOUT_S)
        arrived = asyncio.Event()
        job_ids: set[str] = set()  # every result fires an event: the bench waits for its own job's

        class Handler:
            def event_notification(self, event: object) -> None:
                job_ids.add(event.JobId)
                arrived.set()

        async def connect():
            await client.connect()
            idx = await client.get_namespace_index(NAMESPACE)
            system = await client.nodes.objects.get_child(f"{idx}:VisionSystem")
            automatic = await system.get_child([f"{idx}:VisionStateMachine", f"{idx}:VisionAutomaticModeStateMachine"])
            event_type = await client.nodes.base_event_type.get_child(f"{idx}:ResultReadyEventType")
            subscription = await client.create_subscription(0, Handler())
            await subscription.subscribe_events(system, event_type)
            return automatic, f"{idx}:StartSingleJob"

        automatic, method = loop.run_until_complete(connect())
        self.closers.append(lambda: (loop.run_until_complete(client.disconnect()), loop.close(), adapter.stop()))

        async def one() -> None:
            job_id, error = await automatic.call_method(method, "", "", "", "")
            assert error == 0, f"StartSingleJob error {error}"
            while job_id not in job_ids:
                arrived.clear()
                await asyncio.wait_for(arrived.wait(), TIMEOUT_S)

        return lambda: loop.run_until_complete(one())

    def mqtt(self, handshake: Handshake, mosquitto: str) -> Callable[[], None]:
        """Publish cmd/trigger, then wait for the result message (through a Mosquitto on a free port)."""
        port = load.free_port()
        config = self.root / "mosquitto.conf"
        config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\n")
        broker = subprocess.Popen([mosquitto, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not listening(port):
            assert broker.poll() is None and time.monotonic() < deadline, "mosquitto did not start"
            time.sleep(0.05)
        adapter = MqttAdapter(handshake, "bench", "127.0.0.1", port)
        handshake.on_result.append(adapter)
        adapter.start()
        arrived, subscribed, parts = threading.Condition(), threading.Event(), set()

        def on_message(client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
            with arrived:  # every result is published: the bench waits for its own part's
                parts.add(json.loads(message.payload)["part_id"])
                arrived.notify_all()

        client = paho.Client(CallbackAPIVersion.VERSION2)
        client.on_connect = lambda c, *_: (no_delay(c), c.subscribe("inspection/bench/result", qos=1))
        client.on_subscribe = lambda *_: subscribed.set()
        client.on_message = on_message
        client.connect("127.0.0.1", port)
        client.loop_start()
        assert subscribed.wait(10), "the bench's MQTT client could not subscribe"
        self.closers.append(lambda: (client.disconnect(), client.loop_stop(), adapter.stop(), broker.kill()))

        counter = iter(range(1, 10**9))

        def part() -> None:
            part_id = f"mqtt-{next(counter)}"
            client.publish("inspection/bench/cmd/trigger", json.dumps({"part_id": part_id}), qos=1)
            with arrived:
                assert arrived.wait_for(lambda: part_id in parts, TIMEOUT_S), "no MQTT result"

        return part
