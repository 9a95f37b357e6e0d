"""A PLC played by a pymodbus client: the station's Modbus map (station.modbus) read and written as a PLC does."""

from __future__ import annotations

import struct
from typing import Any

from pymodbus.client import ModbusTcpClient

from station.modbus import Coil, DiscreteInput, HoldingRegister, InputRegister
from tests.helpers.waiting import wait_for


class Plc:
    """Polls the station at 127.0.0.1:`port` (unit id 1)."""

    def __init__(self, port: int, device_id: int = 1) -> None:
        self.client = ModbusTcpClient("127.0.0.1", port=port, timeout=5)
        self.device_id = device_id
        assert self.client.connect(), f"no Modbus server on port {port}"

    def close(self) -> None:
        self.client.close()

    def inputs(self) -> dict[str, bool]:
        """The discrete inputs by name (READY, BUSY, ...)."""
        answer = self.client.read_discrete_inputs(0, count=len(DiscreteInput), device_id=self.device_id)
        assert not answer.isError(), answer
        return {bit.name: answer.bits[bit] for bit in DiscreteInput}

    def registers(self) -> dict[str, Any]:
        """The input registers by name, with SCORE, THRESHOLD and PART_ID decoded."""
        answer = self.client.read_input_registers(0, count=len(InputRegister), device_id=self.device_id)
        assert not answer.isError(), answer
        words = {register.name: answer.registers[register] for register in InputRegister}
        words["SCORE"] = float_of(words["SCORE_HIGH"], words["SCORE_LOW"])
        words["THRESHOLD"] = float_of(words["THRESHOLD_HIGH"], words["THRESHOLD_LOW"])
        words["PART_ID"] = (words["PART_ID_HIGH"] << 16) | words["PART_ID_LOW"]
        return words

    def write(self, register: HoldingRegister, *values: int) -> None:
        assert not self.client.write_registers(register, list(values), device_id=self.device_id).isError()

    def command(self, coil: Coil) -> None:
        assert not self.client.write_coil(coil, True, device_id=self.device_id).isError()

    def trigger(self, part_id: int, product_index: int = 0) -> None:
        """Write the product index and part id, then the Trigger command."""
        self.write(HoldingRegister.PRODUCT_INDEX, product_index, part_id >> 16, part_id & 0xFFFF)
        self.command(Coil.TRIGGER)

    def wait_result(self, timeout_s: float = 60) -> tuple[dict[str, bool], dict[str, Any]]:
        """Wait for ResultReady; then the inputs and registers."""
        wait_for(lambda: self.inputs()["RESULT_READY"], "ResultReady", timeout_s, interval_s=0.005)
        return self.inputs(), self.registers()

    def inspect(self, part_id: int, product_index: int = 0, timeout_s: float = 60) -> tuple[dict, dict]:
        """One part as a PLC runs it: wait Ready, trigger, wait ResultReady, read, acknowledge, wait Ready."""
        wait_for(lambda: self.inputs()["READY"], "Ready", timeout_s, interval_s=0.005)
        self.trigger(part_id, product_index)
        inputs, registers = self.wait_result(timeout_s)
        self.command(Coil.ACKNOWLEDGE)
        wait_for(lambda: self.inputs()["READY"], "Ready after the acknowledge", timeout_s, interval_s=0.005)
        return inputs, registers

    def change_product(self, index: int, timeout_s: float = 60) -> dict[str, Any]:
        """Ask for a changeover; wait until it is no longer pending. Returns the inputs and registers merged."""
        self.write(HoldingRegister.PRODUCT_REQUEST, index)
        self.command(Coil.CHANGEOVER)
        wait_for(lambda: not self.inputs()["CHANGEOVER_PENDING"], "the changeover", timeout_s, interval_s=0.005)
        return {**self.inputs(), **self.registers()}


def float_of(high: int, low: int) -> float:
    """A float32 from its high and low words."""
    return struct.unpack(">f", struct.pack(">HH", high, low))[0]
