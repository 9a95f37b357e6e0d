"""Graceful shutdown: SIGTERM drains the process instead of cutting requests off.

On the first SIGTERM: `/readyz` answers 503 at once (the load balancer stops routing here), new work
(every route but /healthz, /readyz, /metrics) is answered 503 with `Retry-After` and `Connection: close`
(clients retry on another replica), requests already in flight run to the end; once none is left, or
`DCPSFR_SHUTDOWN_GRACE_S` has passed, uvicorn closes the listener and the app shuts down, and the process
exits 0. A second SIGTERM, or SIGINT (Ctrl+C), stops at once the way uvicorn does by default.
On Kubernetes, `terminationGracePeriodSeconds` must exceed the preStop sleep plus the grace period.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from dataclasses import dataclass
from types import FrameType

import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.errors import error_response
from service.api.paths import is_probe

log = logging.getLogger(__name__)

RETRY_AFTER_DRAINING_S = 1
STARTUP_FAILURE = 3  # uvicorn's exit status when the server could not start


@dataclass
class Lifecycle:
    """Shared shutdown state: whether the process is draining, and how many work requests are in flight."""

    draining: bool = False
    in_flight: int = 0  # requests for work (not probes) being answered now


class DrainMiddleware:
    """Counts requests in flight; refuses new work with a 503 while draining."""

    def __init__(self, app: ASGIApp, lifecycle: Lifecycle) -> None:
        self.app = app
        self.lifecycle = lifecycle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count the request while it runs, or answer 503
        (Retry-After, Connection: close) when draining; probes pass untouched."""
        if scope["type"] != "http" or is_probe(scope["path"]):
            await self.app(scope, receive, send)
            return
        if self.lifecycle.draining:
            headers = {"Retry-After": str(RETRY_AFTER_DRAINING_S), "Connection": "close"}
            response = error_response(503, "the service is shutting down; retry (another replica)", headers)
            await response(scope, receive, send)
            return
        self.lifecycle.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.lifecycle.in_flight -= 1


class GracefulServer(uvicorn.Server):
    """uvicorn's server, with SIGTERM draining first (see the module docstring)."""

    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle, grace_s: float) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle
        self.grace_s = grace_s
        self.drain_deadline = 0.0

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """The first SIGTERM starts draining; any later signal (or SIGINT) exits as uvicorn does."""
        if sig == signal.SIGTERM and not self.lifecycle.draining:
            self.lifecycle.draining = True
            self.drain_deadline = time.monotonic() + self.grace_s
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        """While draining, ask uvicorn to exit once no request is
        in flight or the grace period is over; logs progress."""
        if self.lifecycle.draining and not self.should_exit:
            in_flight = self.lifecycle.in_flight
            if in_flight == 0:
                log.info("SIGTERM: no request in flight, shutting down")
                self.should_exit = True
            elif time.monotonic() > self.drain_deadline:
                log.warning("SIGTERM: grace period of %.0f s over, %d request(s) cut off", self.grace_s, in_flight)
                self.should_exit = True
            elif counter % 10 == 0:
                log.info("SIGTERM: draining, %d request(s) in flight", in_flight)
        return await super().on_tick(counter)


def serve(app: FastAPI, host: str, port: int, grace_s: float, log_level: str) -> None:
    """Run the app until SIGTERM/SIGINT; exits 0 after a drained SIGTERM."""
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=2)
    server = GracefulServer(config, app.state.services.lifecycle, grace_s)
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
