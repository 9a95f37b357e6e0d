"""The Modbus TCP map with a pymodbus client playing the PLC, the handshake behind it on fakes."""

from __future__ import annotations

import math
import threading

import pytest

from station.codes import ErrorCode
from station.handshake import State
from station.inspector import InspectFailed
from station.modbus import Coil, DiscreteInput, InputRegister, ModbusAdapter, float_words, part_number, u32_words
from tests.helpers.plc import Plc
from tests.helpers.processes import free_port
from tests.station.conftest import BAD, GOOD


@pytest.fixture
def line(make_station):
    """(plc, handshake, inspector): the station served on a free port, a PLC connected to it."""
    handshake, _, inspector = make_station(acquire_timeout_s=2, inspect_timeout_s=2, changeover_timeout_s=2)
    stop = threading.Event()
    worker = threading.Thread(target=handshake.serve, args=(stop,), daemon=True)
    worker.start()
    adapter = ModbusAdapter(handshake, "127.0.0.1", free_port())
    adapter.start()
    plc = Plc(adapter.port)
    yield plc, handshake, inspector
    plc.close()
    adapter.stop()
    stop.set()
    worker.join(10)


def test_the_words_a_plc_reads():
    assert float_words(0.5) == [0x3F00, 0x0000] and all(math.isnan(x) for x in [float("nan")])
    assert float_words(None) == [0x7FC0, 0x0000]
    assert u32_words(70000) == [1, 4464]
    assert [part_number(text) for text in ("70000", None, "P-1", str(2**32))] == [70000, 0, 0, 0]


def test_the_map_is_contiguous_from_zero():
    for table in (Coil, DiscreteInput, InputRegister):
        assert [int(entry) for entry in table] == list(range(len(table)))


def test_a_plc_triggers_reads_the_verdict_acknowledges_and_rearms(line):
    plc, _, inspector = line
    inspector.answers[:] = [GOOD, BAD]
    assert plc.inputs()["READY"] and plc.registers()["STATE"] == State.READY
    inputs, registers = plc.inspect(part_id=70001)
    assert {name for name, on in inputs.items() if on} == {"RESULT_READY", "OK"}
    assert (registers["STATE"], registers["ERROR_CODE"], registers["SEQUENCE"], registers["PART_ID"]) == (
        State.RESULT_READY,
        0,
        1,
        70001,
    )
    assert (registers["SCORE"], registers["THRESHOLD"], registers["ACTIVE_PRODUCT"]) == (0.25, 0.5, 1)
    assert inspector.parts[0].part_id == "70001"
    after_ack = plc.inputs()
    assert after_ack["READY"] and not after_ack["RESULT_READY"] and not after_ack["OK"]
    assert plc.client.read_coils(0, count=len(Coil), device_id=1).bits[: len(Coil)] == [False] * len(Coil)

    inputs, registers = plc.inspect(part_id=70002, product_index=2)
    assert {name for name, on in inputs.items() if on} == {"RESULT_READY", "NG", "REJECT"}
    assert (registers["SEQUENCE"], registers["REGION_COUNT"], registers["PRODUCT_INDEX"]) == (2, 2, 2)
    assert inspector.parts[1].product_id == "cable"


def test_a_trigger_before_the_acknowledge_is_refused_and_counted(line):
    plc, _, inspector = line
    inspector.answers[:] = [GOOD]
    plc.trigger(1)
    plc.wait_result()
    plc.trigger(2)
    assert plc.registers()["REFUSED_TRIGGERS"] == 1 and plc.inputs()["RESULT_READY"]
    assert len(inspector.parts) == 1


@pytest.mark.parametrize("code", [ErrorCode.SERVICE_UNREACHABLE, ErrorCode.FRAME_REJECTED])
def test_an_error_sets_error_and_reject_never_ok(line, code):
    plc, _, inspector = line
    inspector.answers[:] = [InspectFailed(code, "no")]
    inputs, registers = plc.inspect(part_id=5)
    assert {name for name, on in inputs.items() if on} == {"RESULT_READY", "ERROR", "REJECT"}
    assert registers["ERROR_CODE"] == code and math.isnan(registers["SCORE"])


def test_a_changeover_is_confirmed_in_the_active_product_register(line):
    plc, _, inspector = line
    assert plc.change_product(2)["ACTIVE_PRODUCT"] == 2
    inspector.products = {"bottle"}
    done = plc.change_product(1)
    assert (done["ACTIVE_PRODUCT"], done["CHANGEOVER_FAILED"]) == (1, False)
    refused = plc.change_product(2)  # the service has no references for cable
    assert (refused["ACTIVE_PRODUCT"], refused["CHANGEOVER_FAILED"]) == (1, True)
