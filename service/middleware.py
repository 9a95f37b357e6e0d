"""Pure ASGI middleware: request metrics (outermost) and API-key authentication."""

from __future__ import annotations

import hmac
import time

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import error_response
from service.metrics import Metrics

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
UNROUTED = "unrouted"  # the route label of requests answered before routing (auth) or matching no route


class RequestMetricsMiddleware:
    """Observes dcpsfr_http_request_duration_seconds with bounded labels: the route template, not the raw path."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client sees if the app fails before answering

        async def send_and_record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        start = time.perf_counter()
        try:
            await self.app(scope, receive, send_and_record_status)
        finally:
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
            route = getattr(scope.get("route"), "path", UNROUTED)  # the router records the matched route
            labels = (route, method, str(status))
            self.metrics.http_duration.labels(*labels).observe(time.perf_counter() - start)


class ApiKeyMiddleware:
    """Every path except /healthz and /readyz needs `Authorization: Bearer <key>` or `X-API-Key: <key>`."""

    def __init__(self, app: ASGIApp, keys: list[str]) -> None:
        self.app = app
        self.keys = [key.encode() for key in keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        presented = presented_key(Headers(scope=scope))
        if presented is None:
            response = error_response(
                401,
                "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        elif not self.is_valid(presented.encode()):
            response = error_response(403, "invalid API key")
        else:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)

    def is_valid(self, presented: bytes) -> bool:
        valid = False
        for key in self.keys:  # compare with every key (constant time each), no early exit
            valid |= hmac.compare_digest(presented, key)
        return valid


def presented_key(headers: Headers) -> str | None:
    authorization = headers.get("authorization", "")
    scheme, _, credential = authorization.partition(" ")
    if scheme.lower() == "bearer" and credential.strip():
        return credential.strip()
    api_key = headers.get("x-api-key", "").strip()
    return api_key or None
