"""A real Mosquitto broker (Debian `mosquitto`) on a free loopback port, with a temporary configuration (no
persistence, nothing written outside the test's folder), and a paho client that records what it receives."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.helpers.processes import free_port
from tests.helpers.waiting import wait_for

MOSQUITTO = shutil.which("mosquitto") or next((str(p) for p in (Path("/usr/sbin/mosquitto"),) if p.exists()), None)
needs_mosquitto = pytest.mark.skipif(
    MOSQUITTO is None, reason="the mosquitto binary is absent (Debian package `mosquitto`; .ci/run installs it)"
)


@dataclass
class Broker:
    """`start()` / `kill()` / `start()` again on the same port."""

    root: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    def start(self) -> Broker:
        config = self.root / "mosquitto.conf"
        config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\n"
            f"log_dest file {self.root / 'mosquitto.log'}\n"
        )
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        wait_for(self.listening, f"mosquitto on port {self.port}", 30)
        return self

    def listening(self) -> bool:
        assert self.process.poll() is None, (self.root / "mosquitto.log").read_text()
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)


class Listener:
    """A paho client subscribed to `topic`; `messages` are (topic, decoded JSON or {"text": ...}, retained)."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[tuple[str, dict, bool]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda client, *_: client.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self.on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(10), "the test's MQTT client could not subscribe"

    def on_message(self, client, userdata, message) -> None:
        try:
            body = json.loads(message.payload)
        except ValueError:
            body = {"text": message.payload.decode(errors="replace")}  # a command's plain payload
        with self.lock:
            self.messages.append((message.topic, body, bool(message.retain)))

    def on(self, suffix: str) -> list[dict]:
        with self.lock:
            return [body for topic, body, _ in self.messages if topic.endswith(suffix)]

    def publish(self, topic: str, payload: str = "") -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
