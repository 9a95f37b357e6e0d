"""Pure ASGI middleware: request metrics (outermost), API-key authentication, request body limit, admission to the
model routes (innermost); `service/app.py` adds them innermost first. Which path is open or a model route:
service.api.paths."""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import domain_error_response, error_response
from service.api.paths import is_model_route, is_open, required_role
from service.errors import ServiceError
from service.keys import ApiKey, matching_key
from service.metrics import Metrics

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
UNROUTED = "unrouted"  # the route label of requests answered before routing (auth) or matching no route
HOW_TO_AUTHENTICATE = "send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
INVALID_KEY = (
    "invalid API key: the key sent is not one of the service's keys (DCPSFR_KEYS_FILE, DCPSFR_API_KEYS); check it "
    "for typos, spaces or an old key"
)


class RequestMetricsMiddleware:
    """Observes dcpsfr_http_request_duration_seconds with bounded labels: the route template, not the raw path."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Time the request and observe it under its route template,
        method and status (500 when the app failed before answering)."""
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
    """Every path but the open ones (service.api.paths: health and the console's files) needs
    `Authorization: Bearer <key>` or `X-API-Key: <key>` of a key whose role may send the request
    (service.api.paths.required_role); the key's name goes to `scope["state"]["actor"]` for the audit log."""

    def __init__(self, app: ASGIApp, keys: list[ApiKey]) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass open paths; otherwise answer 401 without a key or with two different keys (Bearer and X-API-Key),
        403 with a wrong one or one whose role is too low (naming the role needed)."""
        if scope["type"] != "http" or is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        presented = presented_key(headers)
        mismatch = key_mismatch_detail(headers, self.keys)
        key = None if presented is None else matching_key(presented, self.keys)
        if mismatch is not None:
            response = error_response(401, mismatch, headers={"WWW-Authenticate": "Bearer"})
        elif presented is None:
            response = error_response(401, missing_key_detail(headers), headers={"WWW-Authenticate": "Bearer"})
        elif key is None:
            response = error_response(403, INVALID_KEY)
        elif not key.allows(role := required_role(scope["method"], scope["path"])):
            response = error_response(403, f"the {role} role is needed (key {key.name!r} has the {key.role} role)")
        else:
            scope.setdefault("state", {})["actor"] = key.name
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)


def missing_key_detail(headers: Headers) -> str:
    """What a request without a usable key gets told; names an Authorization scheme other than Bearer, but never
    echoes a lone token (a key sent without a scheme)."""
    parts = headers.get("authorization", "").split()  # any whitespace separates scheme and credential
    if not parts:
        return f"missing API key: {HOW_TO_AUTHENTICATE}"
    if parts[0].lower() == "bearer":
        return f"empty Bearer credential: {HOW_TO_AUTHENTICATE}"
    if len(parts) == 1:
        return f"an Authorization header needs a scheme: {HOW_TO_AUTHENTICATE}"
    return f"unsupported Authorization scheme {parts[0][:20]!r}: {HOW_TO_AUTHENTICATE}"


def is_valid_key(presented: str, keys: list[ApiKey]) -> bool:
    """Whether `presented` is one of `keys` (by its hash, compared in constant time against every key)."""
    return matching_key(presented, keys) is not None


def is_authorized(headers: Headers, keys: list[ApiKey]) -> bool:
    """True without configured keys (authentication off), else when the request presents a valid key (and, with
    both headers, the same key in each)."""
    if not keys:
        return True
    presented = presented_key(headers)
    valid = presented is not None and is_valid_key(presented, keys)
    return valid and key_mismatch_detail(headers, keys) is None


def presented_key(headers: Headers) -> str | None:
    """The key from `Authorization: Bearer <key>` (a space or tab after the scheme), else from `X-API-Key`, else
    None."""
    return bearer_key(headers) or header_key(headers)


def bearer_key(headers: Headers) -> str | None:
    """The credential of `Authorization: Bearer <key>`, else None."""
    parts = headers.get("authorization", "").split(None, 1)  # scheme, credential: any whitespace between
    if len(parts) == 2 and parts[0].lower() == "bearer":
        return parts[1].strip()
    return None


def header_key(headers: Headers) -> str | None:
    """The key of `X-API-Key`, else None."""
    return headers.get("x-api-key", "").strip() or None


def key_mismatch_detail(headers: Headers, keys: list[ApiKey]) -> str | None:
    """With a Bearer key and an X-API-Key that differ, what the 401 says (naming the header whose key is not
    valid); None when at most one is sent or both carry the same key."""
    bearer, api_key = bearer_key(headers), header_key(headers)
    if bearer is None or api_key is None or hmac.compare_digest(bearer.encode(), api_key.encode()):
        return None
    if is_valid_key(bearer, keys):
        wrong = "the X-API-Key header carries a wrong key"
    elif is_valid_key(api_key, keys):
        wrong = "the Authorization header carries a wrong key"
    else:
        wrong = "neither carries a valid key"
    return f"Authorization: Bearer and X-API-Key carry different keys ({wrong}): send one key, or the same in both"


class BodyLimitMiddleware:
    """Refuses request bodies over `max_bytes` with a JSON 413: at once when Content-Length says so, else as
    soon as the streamed body passes the limit (the route's body parsing re-raises the HTTPException)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.message = f"request body too large: at most {max_bytes} bytes (DCPSFR_MAX_UPLOAD_BYTES)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 413 when Content-Length is over the limit; otherwise
        raise a 413 HTTPException once the streamed body passes it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await error_response(413, self.message)(scope, receive, send)
            return
        received = 0

        async def receive_within_limit() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(413, self.message)
            return message

        await self.app(scope, receive_within_limit, send)


class AdmissionMiddleware:
    """Refuses a model request (service.api.paths) with the worker's 503 (not ready) or 429 (queue full) before its
    body is read: a request that will be refused costs no upload and no decoding."""

    def __init__(self, app: ASGIApp, check: Callable[[], None]) -> None:
        self.app = app
        self.check = check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """For POSTs to model routes run the admission check first and answer its 503/429 without reading the body."""
        if scope["type"] == "http" and is_model_route(scope["method"], scope["path"]):
            try:
                self.check()
            except ServiceError as err:
                await domain_error_response(err)(scope, receive, send)
                return
        await self.app(scope, receive, send)
