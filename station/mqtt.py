"""MQTT: results published (QoS 1) on `<prefix>/<station>/result`, the state retained on `<prefix>/<station>/state`,
commands taken from `<prefix>/<station>/cmd/trigger|acknowledge|product` (docs/plc.md).

paho-mqtt's threaded client: the handshake is thread-based, and paho reconnects by itself. Results wait in a
bounded outbox until the broker acknowledges them (PUBACK), so a broker restart or a network cut loses none
within the bound; when the outbox is full the oldest result is dropped, logged and counted. Delivery is at least
once: after a reconnect a result may come twice (the same `sequence`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from collections import OrderedDict
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from station.handshake import Handshake, PartResult, Snapshot
from station.metrics import StationMetrics

log = logging.getLogger(__name__)
paho_log = logging.getLogger(f"{__name__}.paho")  # paho's own messages (a failing callback among them)
paho_log.addFilter(lambda record: "Client is not connected" not in record.getMessage())  # before each connect

OFFLINE = json.dumps({"state": "OFFLINE"})  # the last will, retained: the broker says it when the station vanishes


def state_record(view: Snapshot) -> dict[str, Any]:
    """The retained state message: the handshake's snapshot as one JSON object."""
    shown = view.shown
    return {
        "state": view.state.name,
        "state_code": int(view.state),
        "ready": view.ready,
        "busy": view.busy,
        "result_ready": shown is not None,
        "verdict": shown.verdict.value if shown else None,
        "reject": bool(shown and shown.reject),
        "error_code": int(shown.code) if shown else 0,
        "sequence": view.last.sequence if view.last else 0,
        "active_index": view.active_index,
        "active_product": view.active_product,
        "changeover_pending": view.changeover_pending,
        "changeover_failed": view.changeover_failed,
        "refused_triggers": view.refused_triggers,
    }


def trigger_arguments(payload: bytes, handshake: Handshake) -> tuple[str | None, int]:
    """(part id, product index) from a trigger payload: empty, or JSON `{"part_id": ..., "product_index": n}` or
    `{"part_id": ..., "product": "<id>"}` (an id not in the table gives index -1: the part ends ERROR 9).
    Raises ValueError for anything else."""
    if not payload.strip():
        return None, 0
    body = json.loads(payload)
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object")
    part_id = body.get("part_id")
    index = body.get("product_index", 0)
    if "product" in body:
        resolved = handshake.products.resolve(str(body["product"]))
        index = resolved[0] if resolved else -1
    if not isinstance(index, int):
        raise ValueError("product_index must be an integer")
    return (str(part_id) if part_id is not None else None), index


def product_selector(payload: bytes) -> int | str:
    """A changeover payload: a product index ("2"), a product id ("bottle"), or JSON {"product": 2 | "bottle"}."""
    text = payload.decode().strip()
    if text.startswith("{"):
        value = json.loads(text).get("product")
        if not isinstance(value, int | str) or value == "":
            raise ValueError('expected {"product": <index or id>}')
        return value
    if not text:
        raise ValueError("empty product")
    return int(text) if text.isdigit() else text


def no_delay(client: paho.Client) -> None:
    """Send small packets at once: Nagle's algorithm against the peer's delayed ACK adds ~40 ms per message
    (paho leaves it on; the broker's side is mosquitto.conf's `set_tcp_nodelay true`)."""
    sock = client.socket()
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Outbox:
    """Results not yet acknowledged by the broker, oldest first, at most `limit`; `dropped` counts the oldest
    ones pushed out when full. Thread-safe."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: OrderedDict[int, bytes] = OrderedDict()
        self.dropped = 0
        self.lock = threading.Lock()

    def put(self, key: int, payload: bytes) -> int | None:
        """Add a result; the key of the result dropped to make room, or None."""
        with self.lock:
            dropped = None
            if len(self.items) >= self.limit:
                dropped, _ = self.items.popitem(last=False)
                self.dropped += 1
            self.items[key] = payload
            return dropped

    def done(self, key: int) -> None:
        """The broker has it."""
        with self.lock:
            self.items.pop(key, None)

    def pending(self) -> list[tuple[int, bytes]]:
        """The results waiting, oldest first."""
        with self.lock:
            return list(self.items.items())

    def __len__(self) -> int:
        return len(self.items)


class MqttAdapter:
    """An MQTT client driving `handshake`; also a result listener (call it with each PartResult)."""

    name = "mqtt"

    def __init__(
        self,
        handshake: Handshake,
        station: str,
        host: str = "127.0.0.1",
        port: int = 1883,
        prefix: str = "inspection",
        outbox_limit: int = 1000,
        username: str | None = None,
        password: str | None = None,
        keepalive_s: int = 10,
        metrics: StationMetrics | None = None,
        poll_s: float = 0.02,
    ) -> None:
        self.handshake, self.station, self.host, self.port = handshake, station, host, port
        self.base = f"{prefix}/{station}"
        self.credentials, self.keepalive_s, self.poll_s = (username, password), keepalive_s, poll_s
        self.metrics = metrics or handshake.metrics
        self.outbox = Outbox(outbox_limit)  # kept across restarts of the client
        self.lock = threading.RLock()
        self.inflight: dict[int, int] = {}  # paho message id -> result sequence
        self.acked_early: set[int] = set()
        self.connected = False
        self.client: paho.Client | None = None
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    @property
    def topics(self) -> dict[str, str]:
        """result, state and the command topics' filter."""
        return {"result": f"{self.base}/result", "state": f"{self.base}/state", "cmd": f"{self.base}/cmd/#"}

    # --- results ---

    def __call__(self, result: PartResult) -> None:
        """Queue a result in the outbox and publish it now when connected."""
        payload = json.dumps({"station": self.station, **result.record()}, ensure_ascii=False).encode()
        dropped = self.outbox.put(result.sequence, payload)
        if dropped is not None:
            self.metrics.outbox_dropped.labels(self.name).inc()
            log.error(
                "MQTT outbox full (%d results): result %d dropped unsent (%d dropped so far)",
                self.outbox.limit,
                dropped,
                self.outbox.dropped,
            )
        self.metrics.outbox_size.labels(self.name).set(len(self.outbox))
        if self.connected:
            self.send(result.sequence, payload)

    def send(self, sequence: int, payload: bytes) -> None:
        """Publish one result (QoS 1); it leaves the outbox on the broker's PUBACK."""
        client = self.client
        if client is None:
            return
        # never under self.lock: paho calls on_publish (which takes it) while holding its own message lock
        info = client.publish(self.topics["result"], payload, qos=1)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            return  # not connected after all: on_connect sends it
        with self.lock:
            acked = info.mid in self.acked_early  # the PUBACK came before this line
            if acked:
                self.acked_early.discard(info.mid)
            else:
                self.inflight[info.mid] = sequence
        if acked:
            self.outbox.done(sequence)
            self.metrics.outbox_size.labels(self.name).set(len(self.outbox))

    def on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        """PUBACK: the broker has the result."""
        with self.lock:
            sequence = self.inflight.pop(mid, None)
            if sequence is None:
                self.acked_early.add(mid)
                return
        self.outbox.done(sequence)
        self.metrics.outbox_size.labels(self.name).set(len(self.outbox))

    # --- connection ---

    def on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        """Subscribe to the commands, say the state, send what waits in the outbox."""
        if reason.is_failure:
            log.error("MQTT broker %s:%d refused the connection: %s", self.host, self.port, reason)
            return
        log.info("MQTT connected to %s:%d as %s", self.host, self.port, self.base)
        no_delay(client)
        client.subscribe(self.topics["cmd"], qos=1)
        self.publish_state(force=True)
        with self.lock:
            self.connected = True
            self.inflight.clear()
            self.acked_early.clear()
        pending = self.outbox.pending()
        if pending:
            log.info("MQTT: sending %d results kept while disconnected", len(pending))
        for sequence, payload in pending:
            self.send(sequence, payload)

    def on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        """Keep results in the outbox until the reconnect."""
        with self.lock:
            self.connected = False
        if not self.stopping.is_set():
            log.error("MQTT connection to %s:%d lost (%s); reconnecting", self.host, self.port, reason)

    def on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        """Run a command; a malformed one is logged and ignored."""
        command = message.topic.removeprefix(f"{self.base}/cmd/")
        try:
            if command == "trigger":
                self.handshake.trigger(*trigger_arguments(message.payload, self.handshake))
            elif command == "acknowledge":
                self.handshake.acknowledge()
            elif command == "product":
                self.handshake.change_product(product_selector(message.payload))
            else:
                log.warning("MQTT: unknown command topic %s", message.topic)
        except (ValueError, UnicodeDecodeError) as err:
            log.warning("MQTT: command %s ignored: %s (payload %r)", command, err, message.payload[:200])

    # --- state ---

    last_state: bytes | None = None

    def publish_state(self, force: bool = False) -> None:
        """Publish the state (retained, QoS 1) when it changed."""
        payload = json.dumps(state_record(self.handshake.snapshot())).encode()
        if (force or payload != self.last_state) and self.client is not None:
            self.client.publish(self.topics["state"], payload, qos=1, retain=True)
            self.last_state = payload

    def watch_state(self) -> None:
        """Publish state changes until stopped (the thread the supervisor watches)."""
        try:
            while not self.stopping.wait(self.poll_s):
                if self.connected:
                    self.publish_state()
        except Exception:
            log.exception("MQTT: the state publisher failed")  # the thread ends: the supervisor restarts it

    # --- lifecycle ---

    def start(self) -> None:
        """Connect in the background (a broker that is down is retried: results wait in the outbox)."""
        self.stopping.clear()
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"station-{self.station}", clean_session=True)
        if self.credentials[0]:
            client.username_pw_set(*self.credentials)
        client.suppress_exceptions = True  # a failing callback is logged; paho's network thread goes on
        client.enable_logger(paho_log)
        client.will_set(self.topics["state"], OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(1, 2)
        client.on_connect, client.on_disconnect = self.on_connect, self.on_disconnect
        client.on_message, client.on_publish = self.on_message, self.on_publish
        self.client, self.last_state = client, None
        client.connect_async(self.host, self.port, self.keepalive_s)
        client.loop_start()
        self.thread = threading.Thread(target=self.watch_state, name="mqtt-state", daemon=True)
        self.thread.start()
        log.info("MQTT client for %s:%d started (topics %s/...)", self.host, self.port, self.base)

    def alive(self) -> bool:
        """Whether the state thread still runs (paho's own thread reconnects by itself)."""
        return self.thread is not None and self.thread.is_alive()

    def stop(self) -> None:
        """Say OFFLINE (retained), disconnect, end the threads; results not yet acknowledged stay in the outbox."""
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(10)
        client, self.client = self.client, None
        with self.lock:
            self.connected = False
        if client is not None:
            with contextlib.suppress(RuntimeError, ValueError):  # not connected: the last will says it
                client.publish(self.topics["state"], OFFLINE, qos=1, retain=True).wait_for_publish(1)
            client.disconnect()
            client.loop_stop()
