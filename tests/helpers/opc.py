"""A PLC played by an asyncua client: StartSingleJob, Acknowledge, PrepareProduct, the Station/ variables and the
ResultReady events of the station's OPC UA server (station.opcua)."""

from __future__ import annotations

import asyncio

from asyncua import Client

from station.opcua import NAMESPACE


class Events:
    """Collects ResultReady events."""

    def __init__(self) -> None:
        self.received: list = []

    def event_notification(self, event) -> None:
        self.received.append(event)


class OpcPlc:
    """An asyncua client: calls StartSingleJob / Acknowledge / PrepareProduct, reads Station/ variables, collects
    ResultReady events."""

    def __init__(self, endpoint: str) -> None:
        self.client = Client(endpoint, timeout=30)
        self.events = Events()

    async def __aenter__(self) -> OpcPlc:
        await self.client.connect()
        self.idx = await self.client.get_namespace_index(NAMESPACE)
        self.system = await self.client.nodes.objects.get_child(f"{self.idx}:VisionSystem")
        self.automatic = await self.system.get_child(
            [f"{self.idx}:VisionStateMachine", f"{self.idx}:VisionAutomaticModeStateMachine"]
        )
        self.station = await self.system.get_child(f"{self.idx}:Station")
        self.recipes = await self.system.get_child(f"{self.idx}:RecipeManagement")
        event_type = await self.client.nodes.base_event_type.get_child(f"{self.idx}:ResultReadyEventType")
        self.subscription = await self.client.create_subscription(10, self.events)
        await self.subscription.subscribe_events(self.system, event_type)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.client.disconnect()

    async def read(self, *names: str) -> dict:
        return {name: await (await self.station.get_child(f"{self.idx}:{name}")).read_value() for name in names}

    async def state(self) -> str:
        node = await self.automatic.get_child(f"{self.idx}:CurrentState")
        return await node.read_value()

    async def start_job(self, part_id: str = "", product_id: str = "", recipe_id: str = "") -> tuple[str, int]:
        job_id, error = await self.automatic.call_method(
            f"{self.idx}:StartSingleJob", "meas-1", part_id, recipe_id, product_id
        )
        return job_id, error

    async def wait_events(self, count: int, timeout_s: float = 30) -> list:
        for _ in range(int(timeout_s / 0.02)):
            if len(self.events.received) >= count:
                return self.events.received
            await asyncio.sleep(0.02)
        raise AssertionError(f"{len(self.events.received)} ResultReady events, expected {count}")

    async def wait(self, name: str, value, timeout_s: float = 30) -> dict:
        for _ in range(int(timeout_s / 0.02)):
            values = await self.read(name)
            if values[name] == value:
                return values
            await asyncio.sleep(0.02)
        raise AssertionError(f"{name} never became {value!r}")

    async def acknowledge(self) -> bool:
        return await self.station.call_method(f"{self.idx}:Acknowledge")

    async def prepare_product(self, product: str) -> int:
        return await self.recipes.call_method(f"{self.idx}:PrepareProduct", product)
