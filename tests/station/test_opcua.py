"""The OPC UA server with an asyncua client playing the PLC, the handshake behind it on fakes."""

from __future__ import annotations

import asyncio
import json
import math
import threading

import pytest

from station.codes import ErrorCode
from station.handshake import State
from station.inspector import InspectFailed
from station.opcua import JobError, OpcUaAdapter, ResultState, machine_states
from tests.helpers.opc import OpcPlc
from tests.helpers.processes import free_port
from tests.station.conftest import BAD, GOOD


@pytest.fixture
def served(make_station):
    """(adapter, handshake, inspector): the handshake's worker running, the OPC UA server on a free port."""
    handshake, _, inspector = make_station(acquire_timeout_s=2, inspect_timeout_s=2, changeover_timeout_s=2)
    adapter = OpcUaAdapter(handshake, "line1-st3", "127.0.0.1", free_port())
    handshake.on_result.append(adapter)
    stop = threading.Event()
    worker = threading.Thread(target=handshake.serve, args=(stop,), daemon=True)
    worker.start()
    adapter.start()
    yield adapter, handshake, inspector
    adapter.stop()
    stop.set()
    worker.join(10)


def test_the_state_machines_follow_the_handshake():
    assert machine_states(State.STARTING) == ("Preoperational", "Initialized")
    assert machine_states(State.READY) == ("Operational", "Ready")
    assert machine_states(State.INSPECTING) == ("Operational", "SingleExecution")
    assert machine_states(State.RESULT_READY) == ("Operational", "SingleExecution")
    assert machine_states(State.STOPPED) == ("Halted", "Initialized")


def test_a_single_job_fires_result_ready_and_sets_the_variables(served):
    adapter, _, inspector = served
    inspector.answers[:] = [GOOD, BAD]

    async def scenario():
        async with OpcPlc(adapter.endpoint) as plc:
            assert await plc.state() == "Ready"
            job_id, error = await plc.start_job(part_id="P-1")
            assert (job_id, error) == ("line1-st3-1", JobError.NONE)
            (event,) = await plc.wait_events(1)
            assert (event.ResultId, event.JobId, event.MeasId, event.PartId, event.ProductId) == (
                "1",
                "line1-st3-1",
                "meas-1",
                "P-1",
                "bottle",
            )
            assert (event.ResultState, event.Verdict, event.ErrorCode, event.Reject) == (
                ResultState.COMPLETED,
                "OK",
                0,
                False,
            )
            assert event.Score == 0.25 and "total" in json.loads(event.ProcessingTimes)
            values = await plc.read("ResultReady", "OK", "NG", "Verdict", "Score", "PartId", "OkCount")
            assert values == {
                "ResultReady": True,
                "OK": True,
                "NG": False,
                "Verdict": "OK",
                "Score": 0.25,
                "PartId": "P-1",
                "OkCount": 1,
            }
            assert await plc.start_job(part_id="P-2") == ("", JobError.NOT_READY)  # not acknowledged yet
            assert await plc.acknowledge() is True
            await plc.wait("Ready", True)
            assert (await plc.read("Verdict", "LastVerdict", "RefusedTriggers")) == {
                "Verdict": "",
                "LastVerdict": "OK",
                "RefusedTriggers": 1,
            }
            assert (await plc.start_job(part_id="P-3", product_id="cable"))[1] == JobError.NONE
            second = (await plc.wait_events(2))[1]
            assert (second.Verdict, second.ProductId, second.Reject, second.ResultId) == ("NG", "cable", True, "2")
            assert (await plc.read("NG", "Reject", "RegionCount", "NgCount")) == {
                "NG": True,
                "Reject": True,
                "RegionCount": 2,
                "NgCount": 1,
            }

    asyncio.run(scenario())
    assert [part.part_id for part in inspector.parts] == ["P-1", "P-3"]


@pytest.mark.parametrize("code", [ErrorCode.SERVICE_UNREACHABLE, ErrorCode.SERVICE_TIMEOUT])
def test_a_service_failure_is_error_with_its_code_never_ok(served, code):
    adapter, _, inspector = served
    inspector.answers[:] = [InspectFailed(code, "down")]

    async def scenario():
        async with OpcPlc(adapter.endpoint) as plc:
            await plc.start_job(part_id="P-9")
            (event,) = await plc.wait_events(1)
            assert (event.ResultState, event.Verdict, event.ErrorCode, event.Reject) == (
                ResultState.FAILED,
                "ERROR",
                code,
                True,
            )
            assert math.isnan(event.Score)
            values = await plc.read("Error", "OK", "ErrorCode", "ErrorCount")
            assert values == {"Error": True, "OK": False, "ErrorCode": code, "ErrorCount": 1}

    asyncio.run(scenario())


def test_unknown_products_and_recipes_are_refused_with_an_error(served):
    adapter, _, inspector = served

    async def scenario():
        async with OpcPlc(adapter.endpoint) as plc:
            assert await plc.start_job(product_id="nope") == ("", JobError.UNKNOWN_PRODUCT)
            assert await plc.start_job(recipe_id="r1") == ("", JobError.RECIPE_NOT_SUPPORTED)
            assert await plc.prepare_product("nope") == JobError.UNKNOWN_PRODUCT
            assert await plc.state() == "Ready"

    asyncio.run(scenario())
    assert inspector.parts == []


def test_prepare_product_is_confirmed_by_the_active_product(served):
    adapter, _, inspector = served

    async def scenario():
        async with OpcPlc(adapter.endpoint) as plc:
            assert await plc.prepare_product("cable") == JobError.NONE
            await plc.wait("ActiveProductId", "cable")
            assert (await plc.read("ActiveProductIndex"))["ActiveProductIndex"] == 2
            inspector.products = {"cable"}
            assert await plc.prepare_product("1") == JobError.NONE  # an index, as digits
            await plc.wait("ChangeoverFailed", True)
            assert (await plc.read("ActiveProductId"))["ActiveProductId"] == "cable"

    asyncio.run(scenario())
