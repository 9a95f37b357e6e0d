"""OPC UA server: the Simple Inline subset of OPC 40100-1 (Machine Vision), in the station's own namespace.

    Objects/VisionSystem                                 (events: ResultReadyEventType)
      VisionStateMachine/CurrentState                    Preoperational | Operational | Halted
      VisionStateMachine/VisionAutomaticModeStateMachine/CurrentState     Initialized | Ready | SingleExecution
      VisionStateMachine/VisionAutomaticModeStateMachine/StartSingleJob(MeasId, PartId, RecipeId, ProductId)
                                                         -> (JobId, Error)
      RecipeManagement/PrepareProduct(ProductId) -> Error   the changeover (by product id, or index as digits)
      Station/...                                        plain variables for PLCs that cannot subscribe to events,
      Station/Acknowledge() -> Accepted                  and the acknowledge of the line's handshake

The names follow the specification; the types are simplified (ids are Strings, ProcessingTimes a JSON String)
and the official nodeset is not loaded. docs/plc.md lists every node.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from datetime import UTC, datetime
from typing import Any

from asyncua import Node, Server, ua

from station.handshake import Handshake, PartResult, Snapshot, State, Verdict

log = logging.getLogger(__name__)

NAMESPACE = "urn:dcpsfr-inspect:station"


class JobError:
    """StartSingleJob's and PrepareProduct's Error: 0 done, < 0 application-specific (as the specification asks)."""

    NONE = 0
    NOT_READY = -1  # the station is not Ready (busy, a result not acknowledged, starting or stopping)
    UNKNOWN_PRODUCT = -2  # the ProductId is not in the station's product table
    RECIPE_NOT_SUPPORTED = -3  # a RecipeId was given: the station selects products, not recipes


class ResultState:
    """ResultStateDataType values used (OPC 40100-1): an OK or NG verdict is Completed, an ERROR Failed."""

    COMPLETED = 1
    FAILED = 4


def machine_states(state: State) -> tuple[str, str]:
    """(VisionStateMachine state, VisionAutomaticModeStateMachine state) for the handshake's state: the job lasts
    until the result is acknowledged."""
    if state == State.STARTING:
        return "Preoperational", "Initialized"
    if state == State.STOPPED:
        return "Halted", "Initialized"
    return "Operational", "Ready" if state == State.READY else "SingleExecution"


VARIABLES: dict[str, ua.VariantType] = {
    "State": ua.VariantType.Int32,  # station.handshake.State, as the Modbus State register
    "StateName": ua.VariantType.String,
    "Ready": ua.VariantType.Boolean,
    "Busy": ua.VariantType.Boolean,
    "ResultReady": ua.VariantType.Boolean,
    "Verdict": ua.VariantType.String,  # the shown result's OK | NG | ERROR, "" when none is shown
    "OK": ua.VariantType.Boolean,
    "NG": ua.VariantType.Boolean,
    "Error": ua.VariantType.Boolean,
    "Reject": ua.VariantType.Boolean,
    "ErrorCode": ua.VariantType.Int32,  # the last result's, 0 = none
    "ResultId": ua.VariantType.String,  # the last result's sequence number
    "LastVerdict": ua.VariantType.String,  # the last result's, kept after the acknowledge
    "Score": ua.VariantType.Double,  # NaN for an ERROR
    "Threshold": ua.VariantType.Double,
    "PartId": ua.VariantType.String,
    "ProductId": ua.VariantType.String,
    "ProductIndex": ua.VariantType.Int32,
    "RegionCount": ua.VariantType.Int32,
    "CycleMs": ua.VariantType.Double,
    "ActiveProductIndex": ua.VariantType.Int32,
    "ActiveProductId": ua.VariantType.String,
    "ChangeoverPending": ua.VariantType.Boolean,
    "ChangeoverFailed": ua.VariantType.Boolean,
    "RefusedTriggers": ua.VariantType.UInt32,
    "OkCount": ua.VariantType.UInt32,
    "NgCount": ua.VariantType.UInt32,
    "ErrorCount": ua.VariantType.UInt32,
    "Heartbeat": ua.VariantType.UInt32,  # seconds since the server started: a watchdog tells a dead station
}

INITIAL = {ua.VariantType.Boolean: False, ua.VariantType.String: "", ua.VariantType.Double: 0.0}

EVENT_FIELDS: list[tuple[str, ua.VariantType]] = [
    ("ResultId", ua.VariantType.String),
    ("IsPartial", ua.VariantType.Boolean),
    ("ResultState", ua.VariantType.Int32),
    ("JobId", ua.VariantType.String),
    ("MeasId", ua.VariantType.String),
    ("PartId", ua.VariantType.String),
    ("ProductId", ua.VariantType.String),
    ("CreationTime", ua.VariantType.DateTime),
    ("ProcessingTimes", ua.VariantType.String),  # JSON: the stage times in ms (docs/plc.md)
    ("Verdict", ua.VariantType.String),
    ("ErrorCode", ua.VariantType.Int32),
    ("Reject", ua.VariantType.Boolean),
    ("Score", ua.VariantType.Double),
    ("Threshold", ua.VariantType.Double),
]


def variable_values(view: Snapshot, counts: dict[Verdict, int], heartbeat: int) -> dict[str, Any]:
    """Every plain variable's value for a snapshot."""
    shown, last = view.shown, view.last
    return {
        "State": int(view.state),
        "StateName": view.state.name,
        "Ready": view.ready,
        "Busy": view.busy,
        "ResultReady": shown is not None,
        "Verdict": shown.verdict.value if shown else "",
        "OK": view.flag(Verdict.OK),
        "NG": view.flag(Verdict.NG),
        "Error": view.flag(Verdict.ERROR),
        "Reject": bool(shown and shown.reject),
        "ErrorCode": int(last.code) if last else 0,
        "ResultId": str(last.sequence) if last else "",
        "LastVerdict": last.verdict.value if last else "",
        "Score": number(last.score if last else None),
        "Threshold": number(last.threshold if last else None),
        "PartId": (last.part_id or "") if last else "",
        "ProductId": (last.product_id or "") if last else "",
        "ProductIndex": last.product_index if last else 0,
        "RegionCount": last.n_regions if last else 0,
        "CycleMs": float(last.stage_ms.get("total", 0.0)) if last else 0.0,
        "ActiveProductIndex": view.active_index,
        "ActiveProductId": view.active_product,
        "ChangeoverPending": view.changeover_pending,
        "ChangeoverFailed": view.changeover_failed,
        "RefusedTriggers": view.refused_triggers,
        "OkCount": counts[Verdict.OK],
        "NgCount": counts[Verdict.NG],
        "ErrorCount": counts[Verdict.ERROR],
        "Heartbeat": heartbeat,
    }


def number(value: float | None) -> float:
    """A Double for a score that may be missing (NaN)."""
    return math.nan if value is None else float(value)


def same(a: Any, b: Any) -> bool:
    """Equal, NaN included."""
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


class OpcUaAdapter:
    """An OPC UA server (no security: a line network; anonymous) in its own thread, driving `handshake`; also a
    result listener (call it with each PartResult: it fires the ResultReady event)."""

    name = "opcua"

    def __init__(
        self, handshake: Handshake, station: str, host: str = "0.0.0.0", port: int = 4840, poll_s: float = 0.02
    ) -> None:
        self.handshake, self.station, self.host, self.port, self.poll_s = handshake, station, host, port, poll_s
        self.counts = dict.fromkeys(Verdict, 0)
        self.lock = threading.Lock()
        self.jobs = 0
        self.pending_job: tuple[str, str] | None = None  # (JobId, MeasId) of the OPC UA trigger in progress
        self.started = time.monotonic()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()
        self.nodes: dict[str, Node] = {}
        self.values: dict[str, Any] = {}
        self.events: Any = None

    @property
    def endpoint(self) -> str:
        """opc.tcp://host:port/"""
        return f"opc.tcp://{self.host}:{self.port}/"

    # --- the address space ---

    async def build(self, server: Server) -> None:
        """The VisionSystem object, its state machines, methods, plain variables and event type."""
        idx = await server.register_namespace(NAMESPACE)
        system = await server.nodes.objects.add_object(idx, "VisionSystem")
        await system.set_event_notifier([ua.EventNotifier.SubscribeToEvents])
        machine = await system.add_object(idx, "VisionStateMachine")
        automatic = await machine.add_object(idx, "VisionAutomaticModeStateMachine")
        self.nodes["SystemState"] = await machine.add_variable(idx, "CurrentState", "", ua.VariantType.String)
        self.nodes["AutomaticState"] = await automatic.add_variable(idx, "CurrentState", "", ua.VariantType.String)
        text = ua.VariantType.String
        await automatic.add_method(
            idx, "StartSingleJob", self.start_single_job, [text, text, text, text], [text, ua.VariantType.Int32]
        )
        recipes = await system.add_object(idx, "RecipeManagement")
        await recipes.add_method(idx, "PrepareProduct", self.prepare_product, [text], [ua.VariantType.Int32])
        outputs = await system.add_object(idx, "Station")
        for name, kind in VARIABLES.items():
            self.nodes[name] = await outputs.add_variable(idx, name, INITIAL.get(kind, 0), kind)
        await outputs.add_method(idx, "Acknowledge", self.acknowledge, [], [ua.VariantType.Boolean])
        event_type = await server.create_custom_event_type(
            idx, "ResultReadyEventType", ua.ObjectIds.BaseEventType, EVENT_FIELDS
        )
        self.events = await server.get_event_generator(event_type, system)
        self.values = {}

    async def refresh(self) -> None:
        """Write the variables whose value changed since the last refresh."""
        view = self.handshake.snapshot()
        values = variable_values(view, self.counts, int(time.monotonic() - self.started))
        values["SystemState"], values["AutomaticState"] = machine_states(view.state)
        for name, value in values.items():
            if name not in self.values or not same(self.values[name], value):
                kind = VARIABLES.get(name, ua.VariantType.String)
                await self.nodes[name].write_value(ua.Variant(value, kind))
                self.values[name] = value

    # --- methods (asyncua calls them with the parent node id and Variants) ---

    async def start_single_job(
        self, parent: ua.NodeId, meas: ua.Variant, part: ua.Variant, recipe: ua.Variant, product: ua.Variant
    ) -> list[ua.Variant]:
        """StartSingleJob: trigger one part. JobId is "" when Error is not 0."""
        error, job_id = self.trigger(meas.Value or "", part.Value or "", recipe.Value or "", product.Value or "")
        return [ua.Variant(job_id, ua.VariantType.String), ua.Variant(error, ua.VariantType.Int32)]

    def trigger(self, meas_id: str, part_id: str, recipe_id: str, product_id: str) -> tuple[int, str]:
        """(Error, JobId) of a StartSingleJob."""
        if recipe_id:
            return JobError.RECIPE_NOT_SUPPORTED, ""
        index = 0
        if product_id:
            resolved = self.handshake.products.resolve(product_id)
            if resolved is None:
                return JobError.UNKNOWN_PRODUCT, ""
            index = resolved[0]
        with self.lock:
            self.jobs += 1
            job_id = f"{self.station}-{self.jobs}"
            self.pending_job = (job_id, meas_id)
            if not self.handshake.trigger(part_id or None, index):
                self.pending_job = None
                return JobError.NOT_READY, ""
        return JobError.NONE, job_id

    async def prepare_product(self, parent: ua.NodeId, product: ua.Variant) -> list[ua.Variant]:
        """PrepareProduct: the changeover, confirmed by Station/ActiveProductId (or ChangeoverFailed)."""
        text = str(product.Value or "")
        selector: int | str = int(text) if text.isdigit() and self.handshake.products.resolve(text) is None else text
        if self.handshake.products.resolve(selector) is None:
            error = JobError.UNKNOWN_PRODUCT
        else:
            error = JobError.NONE if self.handshake.change_product(selector) else JobError.NOT_READY
        return [ua.Variant(error, ua.VariantType.Int32)]

    async def acknowledge(self, parent: ua.NodeId) -> list[ua.Variant]:
        """Acknowledge: the line has read the result."""
        return [ua.Variant(self.handshake.acknowledge(), ua.VariantType.Boolean)]

    # --- results ---

    def __call__(self, result: PartResult) -> None:
        """Count the result and fire its ResultReady event (from the server's loop; never blocks)."""
        with self.lock:
            job, self.pending_job = self.pending_job, None
            self.counts[result.verdict] += 1
        if self.loop is not None and self.loop.is_running():
            asyncio.run_coroutine_threadsafe(self.emit(result, job), self.loop)

    async def emit(self, result: PartResult, job: tuple[str, str] | None) -> None:
        """Update the variables, then fire the event."""
        await self.refresh()
        event = self.events.event
        fields = {
            "ResultId": str(result.sequence),
            "IsPartial": False,
            "ResultState": ResultState.FAILED if result.verdict == Verdict.ERROR else ResultState.COMPLETED,
            "JobId": job[0] if job else "",
            "MeasId": job[1] if job else "",
            "PartId": result.part_id or "",
            "ProductId": result.product_id or "",
            "CreationTime": datetime.now(UTC),
            "ProcessingTimes": json.dumps({stage: round(ms, 3) for stage, ms in result.stage_ms.items()}),
            "Verdict": result.verdict.value,
            "ErrorCode": int(result.code),
            "Reject": result.reject,
            "Score": number(result.score),
            "Threshold": number(result.threshold),
        }
        for name, value in fields.items():
            setattr(event, name, value)
        event.Message = ua.LocalizedText(f"part {result.part_id or '-'}: {result.verdict.value}")
        event.Severity = 500 if result.verdict == Verdict.ERROR else 100
        await self.events.trigger()

    # --- lifecycle ---

    async def serve(self, listening: threading.Event, failure: list[BaseException]) -> None:
        """Run the server and refresh the variables until stopped."""
        server = Server()
        try:
            self.loop = asyncio.get_running_loop()
            await server.init()
            server.set_endpoint(self.endpoint)
            server.set_server_name(f"dcpsfr-inspect station {self.station}")
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
            await self.build(server)
            await self.refresh()
            await server.start()
        except BaseException as err:
            failure.append(err)
            listening.set()
            return
        listening.set()
        try:
            while not self.stopping.is_set():
                await self.refresh()
                await asyncio.sleep(self.poll_s)
        except Exception:
            log.exception("OPC UA: the server failed")  # the thread ends: the supervisor restarts it
        finally:
            await server.stop()

    def start(self, timeout_s: float = 60.0) -> None:
        """Listen on host:port from a daemon thread; raises OSError when it cannot."""
        self.stopping.clear()
        listening = threading.Event()
        failure: list[BaseException] = []
        self.thread = threading.Thread(
            target=asyncio.run, args=(self.serve(listening, failure),), name="opcua", daemon=True
        )
        self.thread.start()
        if not listening.wait(timeout_s) or failure:
            raise OSError(f"OPC UA: cannot listen on {self.endpoint}: {failure[0] if failure else 'timeout'}")
        log.info("OPC UA server listening on %s", self.endpoint)

    def alive(self) -> bool:
        """Whether the server's thread still runs."""
        return self.thread is not None and self.thread.is_alive()

    def stop(self) -> None:
        """Stop the server and end its thread."""
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(10)
