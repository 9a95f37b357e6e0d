"""Keeps the protocol adapters running: one that dies (its thread ended by an exception) is logged, counted and
started again, so the line is never silently left without its PLC connection."""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from station.metrics import StationMetrics

log = logging.getLogger(__name__)


class Adapter(Protocol):
    """A protocol server or client driving the handshake (Modbus TCP, OPC UA, MQTT)."""

    name: str

    def start(self) -> None:
        """Begin serving from background threads; raises OSError when it cannot (a port in use)."""
        ...

    def stop(self) -> None:
        """Stop serving and end the threads (safe to call on a dead adapter)."""
        ...

    def alive(self) -> bool:
        """Whether it still serves."""
        ...


class Supervisor:
    """Watches `adapters` from one daemon thread every `poll_s`; a dead one is stopped and started again after
    `backoff_s` (doubling up to `max_backoff_s` while restarts keep failing)."""

    def __init__(
        self,
        adapters: list[Adapter],
        metrics: StationMetrics,
        poll_s: float = 0.2,
        backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
    ) -> None:
        self.adapters, self.metrics = adapters, metrics
        self.poll_s, self.backoff_s, self.max_backoff_s = poll_s, backoff_s, max_backoff_s
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        """Start every adapter (raises OSError from the first that cannot), then watch them."""
        for adapter in self.adapters:
            adapter.start()
        self.thread = threading.Thread(target=self.watch, name="supervisor", daemon=True)
        self.thread.start()

    def watch(self) -> None:
        """Restart dead adapters until `stop`."""
        delays = {adapter.name: self.backoff_s for adapter in self.adapters}
        while not self.stopping.wait(self.poll_s):
            for adapter in self.adapters:
                if adapter.alive() or self.stopping.is_set():
                    continue
                delays[adapter.name] = self.restart(adapter, delays[adapter.name])

    def restart(self, adapter: Adapter, delay_s: float) -> float:
        """Stop and start one dead adapter; the next delay (reset on success, doubled on failure)."""
        log.error("protocol %s stopped unexpectedly; restarting it in %.1f s", adapter.name, delay_s)
        self.metrics.protocol_restarts.labels(adapter.name).inc()
        try:
            adapter.stop()
        except Exception:
            log.exception("protocol %s: stopping the dead adapter failed", adapter.name)
        if self.stopping.wait(delay_s):
            return delay_s
        try:
            adapter.start()
        except Exception:
            log.exception("protocol %s: restart failed; trying again", adapter.name)
            return min(delay_s * 2, self.max_backoff_s)
        log.info("protocol %s restarted", adapter.name)
        return self.backoff_s

    def stop(self) -> None:
        """Stop watching, then stop every adapter."""
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(10)
        for adapter in self.adapters:
            try:
                adapter.stop()
            except Exception:
                log.exception("protocol %s: stop failed", adapter.name)
