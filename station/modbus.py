"""The Modbus TCP server a PLC polls: the handshake's commands and outputs as coils and registers (docs/plc.md).

Commands are coils the PLC writes 1 to; the station takes the command and the coil reads 0 again. What the PLC
writes into holding registers (the part id, the product index) is read when the trigger comes. Everything the
station says is read-only: discrete inputs and input registers, computed from the handshake's snapshot at each
read. Addresses are 0-based (PLC tools that count from 1 show Trigger as coil 1 / 00001).
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
import threading
import time
from enum import IntEnum

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from station.handshake import Handshake, Snapshot, Verdict

log = logging.getLogger(__name__)


class Coil(IntEnum):
    """Commands the PLC writes (1 = do it; the station resets the coil to 0 once taken)."""

    TRIGGER = 0
    ACKNOWLEDGE = 1
    CHANGEOVER = 2


class DiscreteInput(IntEnum):
    """What the station says, one bit each (read-only)."""

    READY = 0
    BUSY = 1
    RESULT_READY = 2
    OK = 3
    NG = 4
    ERROR = 5
    REJECT = 6
    CHANGEOVER_PENDING = 7
    CHANGEOVER_FAILED = 8


class HoldingRegister(IntEnum):
    """What the PLC writes before a command."""

    PRODUCT_INDEX = 0  # the product of the next part; 0 = the active product
    PART_ID_HIGH = 1  # the next part's id, an unsigned 32-bit number (0 = none), high word first
    PART_ID_LOW = 2
    PRODUCT_REQUEST = 3  # the product index a Changeover command switches to


class InputRegister(IntEnum):
    """What the station says, 16-bit words (read-only). Floats are IEEE 754 float32, high word first."""

    STATE = 0  # station.handshake.State
    ERROR_CODE = 1  # station.codes.ErrorCode of the last result, 0 = none
    SEQUENCE = 2  # the last result's number (mod 65536): changes with every result
    PART_ID_HIGH = 3  # the last result's part id
    PART_ID_LOW = 4
    PRODUCT_INDEX = 5  # the last result's product index
    ACTIVE_PRODUCT = 6  # the active product's index: the changeover's confirmation
    SCORE_HIGH = 7  # the last result's score (NaN for an ERROR)
    SCORE_LOW = 8
    THRESHOLD_HIGH = 9  # the threshold it was compared with
    THRESHOLD_LOW = 10
    REGION_COUNT = 11  # defect regions found
    CYCLE_MS = 12  # trigger -> result shown, milliseconds (65535 = longer)
    HEARTBEAT = 13  # +1 every second while the station runs: a PLC watchdog tells a dead station
    REFUSED_TRIGGERS = 14  # triggers refused because the station was not ready (mod 65536)


def float_words(value: float | None) -> list[int]:
    """[high, low] words of a float32; NaN for None."""
    packed = struct.pack(">f", math.nan if value is None else value)
    return [int.from_bytes(packed[:2], "big"), int.from_bytes(packed[2:], "big")]


def u32_words(value: int) -> list[int]:
    """[high, low] words of an unsigned 32-bit number."""
    return [(value >> 16) & 0xFFFF, value & 0xFFFF]


def part_number(part_id: str | None) -> int:
    """A part id as the PLC wrote it (decimal), 0 for none or an id that is not a 32-bit number."""
    return int(part_id) if part_id and part_id.isdigit() and int(part_id) < 2**32 else 0


def discrete_inputs(view: Snapshot) -> list[bool]:
    """The discrete inputs, in DiscreteInput order."""
    shown = view.shown
    bits = {
        DiscreteInput.READY: view.ready,
        DiscreteInput.BUSY: view.busy,
        DiscreteInput.RESULT_READY: shown is not None,
        DiscreteInput.OK: view.flag(Verdict.OK),
        DiscreteInput.NG: view.flag(Verdict.NG),
        DiscreteInput.ERROR: view.flag(Verdict.ERROR),
        DiscreteInput.REJECT: shown is not None and shown.reject,
        DiscreteInput.CHANGEOVER_PENDING: view.changeover_pending,
        DiscreteInput.CHANGEOVER_FAILED: view.changeover_failed,
    }
    return [bits[bit] for bit in DiscreteInput]


def input_registers(view: Snapshot, heartbeat: int) -> list[int]:
    """The input registers, in InputRegister order."""
    last = view.last
    cycle_ms = last.stage_ms.get("total", 0.0) if last else 0.0
    return [
        int(view.state),
        int(last.code) if last else 0,
        last.sequence & 0xFFFF if last else 0,
        *u32_words(part_number(last.part_id) if last else 0),
        last.product_index if last else 0,
        view.active_index,
        *float_words(last.score if last else None),
        *float_words(last.threshold if last else None),
        min(last.n_regions, 0xFFFF) if last else 0,
        min(round(cycle_ms), 0xFFFF),
        heartbeat & 0xFFFF,
        view.refused_triggers & 0xFFFF,
    ]


class ModbusAdapter:
    """A Modbus TCP server (one device; any unit id answers) in its own thread, driving `handshake`."""

    name = "modbus"

    def __init__(self, handshake: Handshake, host: str = "0.0.0.0", port: int = 502) -> None:
        self.handshake, self.host, self.port = handshake, host, port
        self.holding = [0] * len(HoldingRegister)
        self.started = time.monotonic()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: ModbusTcpServer | None = None
        self.thread: threading.Thread | None = None

    def device(self) -> SimDevice:
        """The register map: coils, discrete inputs, holding and input registers, each from address 0."""
        blocks = (
            [SimData(0, count=len(Coil), values=False, datatype=DataType.BITS)],
            [SimData(0, count=16, values=False, datatype=DataType.BITS)],
            [SimData(0, count=len(HoldingRegister), values=0, datatype=DataType.REGISTERS)],
            [SimData(0, count=len(InputRegister), values=0, datatype=DataType.REGISTERS)],
        )
        return SimDevice(0, simdata=blocks, action=self.access)

    async def access(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> None:
        """pymodbus calls this on every request: commands on coil writes, the outputs filled in on reads."""
        if function_code in (5, 15) and values is not None:
            for offset, value in enumerate(values):
                if value:
                    self.command(Coil(address + offset))
            values[:] = [False] * len(values)  # type: ignore[index]  # the command is taken: the coil reads 0
        elif function_code in (6, 16) and values is not None:
            for offset, value in enumerate(values):
                self.holding[address + offset] = int(value)
        elif function_code == 2:
            bits = discrete_inputs(self.handshake.snapshot())
            registers[0] = sum(1 << i for i, bit in enumerate(bits) if bit)  # 16 inputs packed LSB first
        elif function_code == 4:
            registers[: len(InputRegister)] = input_registers(self.handshake.snapshot(), self.heartbeat())

    def heartbeat(self) -> int:
        """Seconds since the server started."""
        return int(time.monotonic() - self.started)

    def command(self, coil: Coil) -> None:
        """Run one command coil written to 1."""
        if coil == Coil.TRIGGER:
            part = (self.holding[HoldingRegister.PART_ID_HIGH] << 16) | self.holding[HoldingRegister.PART_ID_LOW]
            self.handshake.trigger(str(part) if part else None, self.holding[HoldingRegister.PRODUCT_INDEX])
        elif coil == Coil.ACKNOWLEDGE:
            self.handshake.acknowledge()
        elif coil == Coil.CHANGEOVER:
            self.handshake.change_product(self.holding[HoldingRegister.PRODUCT_REQUEST])

    def start(self, timeout_s: float = 10.0) -> None:
        """Listen on host:port from a daemon thread; raises OSError when it cannot listen."""
        listening = threading.Event()
        failure: list[BaseException] = []

        async def serve() -> None:
            try:
                self.loop = asyncio.get_running_loop()
                self.server = ModbusTcpServer(self.device(), address=(self.host, self.port))
                await self.server.serve_forever(background=True)
            except BaseException as err:
                failure.append(err)
                listening.set()
                return
            listening.set()
            await self.server.serving

        self.thread = threading.Thread(target=asyncio.run, args=(serve(),), name="modbus", daemon=True)
        self.thread.start()
        if not listening.wait(timeout_s) or failure:
            raise OSError(f"Modbus TCP: cannot listen on {self.host}:{self.port}: {failure[0] if failure else ''}")
        log.info("Modbus TCP server listening on %s:%d", self.host, self.port)

    def alive(self) -> bool:
        """Whether the server's thread still runs."""
        return self.thread is not None and self.thread.is_alive()

    def stop(self) -> None:
        """Close the server and end its thread."""
        if self.loop is not None and self.server is not None and self.thread is not None:
            if self.thread.is_alive() and not self.loop.is_closed():
                asyncio.run_coroutine_threadsafe(self.server.shutdown(), self.loop).result(10)
            self.thread.join(10)
