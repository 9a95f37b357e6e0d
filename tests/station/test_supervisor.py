"""The supervisor restarts a protocol adapter that died, says so in the log and counts it."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading

import pytest

from station.metrics import StationMetrics
from station.modbus import ModbusAdapter
from station.opcua import OpcUaAdapter
from station.supervisor import Supervisor
from tests.helpers.opc import OpcPlc
from tests.helpers.plc import Plc
from tests.helpers.processes import free_port
from tests.helpers.waiting import wait_for
from tests.station.conftest import GOOD


class FlakyAdapter:
    """Dies once after its first start; its second start fails `start_failures` times."""

    name = "flaky"

    def __init__(self, start_failures: int = 0) -> None:
        self.starts, self.stops, self.start_failures, self.dead = 0, 0, start_failures, False

    def start(self) -> None:
        self.starts += 1
        if 1 < self.starts <= 1 + self.start_failures:
            raise OSError("port busy")
        self.dead = self.starts == 1

    def stop(self) -> None:
        self.stops += 1

    def alive(self) -> bool:
        return not self.dead


def restarts(metrics: StationMetrics, protocol: str) -> float | None:
    return metrics.registry.get_sample_value("station_protocol_restarts_total", {"protocol": protocol})


@pytest.mark.parametrize("start_failures", [0, 2])
def test_a_dead_adapter_is_restarted_until_it_starts(caplog, start_failures):
    adapter, metrics = FlakyAdapter(start_failures), StationMetrics()
    supervisor = Supervisor([adapter], metrics, poll_s=0.01, backoff_s=0.01)
    with caplog.at_level(logging.INFO, logger="station.supervisor"):
        supervisor.start()
        wait_for(lambda: adapter.alive() and adapter.starts == 2 + start_failures, "the restarted adapter")
        supervisor.stop()
    assert restarts(metrics, "flaky") == 1 + start_failures  # every attempt counts
    messages = [r.getMessage() for r in caplog.records]
    assert "protocol flaky stopped unexpectedly; restarting it in 0.0 s" in messages
    assert sum("restart failed" in m for m in messages) == start_failures and "protocol flaky restarted" in messages


def test_a_start_that_fails_at_first_is_raised():
    adapter = FlakyAdapter()
    adapter.start = lambda: (_ for _ in ()).throw(OSError("port 502 in use"))
    with pytest.raises(OSError, match="502"):
        Supervisor([adapter], StationMetrics()).start()


def test_the_opcua_server_crashing_once_is_restarted_and_answers_again(make_station, caplog, monkeypatch):
    handshake, _, inspector = make_station(acknowledge=False, acquire_timeout_s=2, inspect_timeout_s=2)
    inspector.answers[:] = [GOOD]
    port = free_port()
    adapter = OpcUaAdapter(handshake, "line1-st3", "127.0.0.1", port)
    handshake.on_result.append(adapter)
    stop = threading.Event()
    worker = threading.Thread(target=handshake.serve, args=(stop,), daemon=True)
    worker.start()
    supervisor = Supervisor([adapter], handshake.metrics, poll_s=0.05, backoff_s=0.05)
    supervisor.start()
    original, calls = adapter.refresh, []

    async def crash_once() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected crash")
        await original()

    try:
        with caplog.at_level(logging.ERROR):
            monkeypatch.setattr(adapter, "refresh", crash_once)
            wait_for(lambda: restarts(handshake.metrics, "opcua") == 1, "the restart")
            wait_for(lambda: adapter.alive() and len(calls) > 1, "the server back")
            wait_for(lambda: listening(port), "the server listening again")  # its thread runs before it listens
        assert any("OPC UA: the server failed" in r.getMessage() for r in caplog.records)

        async def scenario():
            async with OpcPlc(adapter.endpoint) as plc:
                assert (await plc.start_job(part_id="after"))[1] == 0
                (event,) = await plc.wait_events(1)
                assert (event.PartId, event.Verdict) == ("after", "OK")

        asyncio.run(scenario())
    finally:
        supervisor.stop()
        stop.set()
        worker.join(10)


def test_the_modbus_server_ending_is_restarted_and_the_plc_reconnects(make_station, caplog):
    handshake, _, inspector = make_station(acknowledge=False, acquire_timeout_s=2, inspect_timeout_s=2)
    inspector.answers[:] = [GOOD]
    adapter = ModbusAdapter(handshake, "127.0.0.1", free_port())
    stop = threading.Event()
    worker = threading.Thread(target=handshake.serve, args=(stop,), daemon=True)
    worker.start()
    supervisor = Supervisor([adapter], handshake.metrics, poll_s=0.05, backoff_s=0.05)
    supervisor.start()
    try:
        first_thread = adapter.thread
        with caplog.at_level(logging.ERROR):
            asyncio.run_coroutine_threadsafe(adapter.server.shutdown(), adapter.loop).result(10)  # its loop ends
            wait_for(lambda: restarts(handshake.metrics, "modbus") == 1, "the restart")
            wait_for(lambda: adapter.alive() and adapter.thread is not first_thread, "the server back")
        assert any("protocol modbus stopped unexpectedly" in r.getMessage() for r in caplog.records)
        plc = wait_for(lambda: connect(adapter.port), "the PLC reconnected")
        try:
            _, registers = plc.inspect(part_id=7)
            assert (registers["SEQUENCE"], registers["PART_ID"]) == (1, 7)
        finally:
            plc.close()
    finally:
        supervisor.stop()
        stop.set()
        worker.join(10)


def listening(port: int) -> bool:
    """Whether a TCP connection to the port on loopback is accepted now."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def connect(port: int) -> Plc | None:
    try:
        return Plc(port)
    except AssertionError:
        return None
