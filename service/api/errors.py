"""Domain errors -> HTTP, in one place: each error kind's status (STATUS), the JSON body `{"detail": ...}`, the
Retry-After and Connection headers, and the OpenAPI documentation of every error status a route declares."""

from __future__ import annotations

import contextlib
import logging
import math
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import get_route_path

from service.errors import (
    BadImage,
    Conflict,
    InvalidInput,
    ModelTimeout,
    NeedsConfirmation,
    NotFound,
    Overloaded,
    ServiceError,
    StorageFailed,
    TooLarge,
    Unavailable,
    UnsupportedImage,
)
from service.imaging.formats import PRODUCT_ID, PRODUCT_ID_TEXT, TAG_TEXT, TAG_TEXT_MEANING
from service.products.store import ProductMissing, StoreConflict, StoreError, StoreUnavailable

log = logging.getLogger(__name__)

# every domain error's HTTP status (the first class in an error's MRO found here decides)
STATUS: dict[type[Exception], int] = {
    BadImage: 400,
    NotFound: 404,
    ProductMissing: 404,
    Conflict: 409,
    StoreConflict: 409,
    TooLarge: 413,
    UnsupportedImage: 415,
    InvalidInput: 422,
    Overloaded: 429,
    Unavailable: 503,
    StoreUnavailable: 503,
    ModelTimeout: 504,
    StorageFailed: 507,
    StoreError: 507,
}

MEANINGS = {
    400: "an image, or the request body, does not decode",
    401: "missing API key (when DCPSFR_KEYS_FILE or DCPSFR_API_KEYS is set)",
    403: "wrong API key, or its role may not do this (the detail names the role needed)",
    404: "unknown product, inspection or file",
    405: "method not allowed: the Allow header lists the methods of this path",
    409: "the product changed (another upload or a delete) while this request ran, or it has no room for it "
    "(DCPSFR_MAX_REFERENCES references already), or the change would leave a threshold that rejects nothing on "
    "the product's scale, or it asks for confirmation (`confirmation`: send it again with that field set to true)",
    413: "body, pixels or image count over the limit",
    415: "not an accepted image (PNG, JPEG, BMP, TIFF)",
    422: "bad field, or a field taken once sent more than once",
    429: "queue full: retry after Retry-After seconds",
    503: "model loading or unavailable, the blob folder or the records database unavailable, or shutting down",
    504: "the model did not answer within DCPSFR_WORKER_TIMEOUT_S",
    507: "the data dir could not store the change; the previous state is still current",
}

NOT_AN_OBJECT = "the request body must be a JSON object of this call's fields (Content-Type: application/json)"


class Confirmation(BaseModel):
    """What a 409 that asks for confirmation would change, and how to confirm it."""

    field: str = Field(description="send the same request again with this form field set to true to apply it")
    threshold: float | None = Field(None, description="the image threshold in force now")
    proposed_threshold: float | None = Field(None, description="the image threshold the change would set")
    pixel_threshold: float | None = Field(None, description="the pixel threshold in force now (when it would move)")
    proposed_pixel_threshold: float | None = Field(None, description="the pixel threshold the change would set")
    factor: float | None = Field(
        None,
        description="the proposed threshold over the one in force (logits: heights above the median normal logit)",
    )


class ErrorBody(BaseModel):
    """The body of every error answer (the OpenAPI schema of each declared error status)."""

    detail: str = Field(description="what was wrong, in one sentence")
    errors: list[dict[str, Any]] | None = Field(None, description="422 only: each invalid field (loc, msg, type)")
    confirmation: Confirmation | None = Field(None, description="409 only: a change that needs confirming")


def status_of(err: Exception) -> int | None:
    """The HTTP status of a domain error (None for anything else: a 500)."""
    for kind in type(err).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return None


def headers_of(err: Exception) -> dict[str, str]:
    """Retry-After (whole seconds, rounded up) and Connection: close when the error asks for them."""
    headers = {}
    retry_after = getattr(err, "retry_after_s", None)
    if retry_after is not None:
        headers["Retry-After"] = str(math.ceil(retry_after))
    if getattr(err, "close", False):
        headers["Connection"] = "close"
    return headers


def error_response(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    """A JSON error answer `{"detail": message, **extra}` with this status and headers."""
    return JSONResponse({"detail": message, **extra}, status_code=status, headers=headers)


def domain_error_response(err: Exception) -> JSONResponse:
    """The answer to a domain error (one of STATUS's kinds)."""
    status = status_of(err)
    assert status is not None, f"{type(err).__name__} is not a domain error"
    message = err.message if isinstance(err, ServiceError) else str(err)
    if isinstance(err, NeedsConfirmation):
        confirmation = Confirmation(field=err.field, **err.details).model_dump(exclude_none=True)
        return error_response(status, message, headers_of(err), confirmation=confirmation)
    return error_response(status, message, headers_of(err))


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for a route or router: each status with its meaning and the ErrorBody schema, always
    as JSON (inline, so a route whose own answers are not JSON, such as /metrics, still documents JSON errors)."""
    content = {"application/json": {"schema": ErrorBody.model_json_schema()}}
    return {
        status: {"description": MEANINGS.get(status) or HTTPStatus(status).phrase, "content": content}
        for status in statuses
    }


NOT_A_FILE = "Expected UploadFile"  # FastAPI's message for a text part where a file is expected
PATTERN_MEANINGS = {PRODUCT_ID.pattern: PRODUCT_ID_TEXT, TAG_TEXT: TAG_TEXT_MEANING}  # instead of the regex
NO_OFFSET = (
    "a time without a UTC offset is ambiguous (the sender's zone is unknown): add Z for UTC or the offset, e.g. "
    "2026-03-01T06:00:00Z or 2026-03-01T07:00:00+01:00"
)


def explained(error: dict[str, Any]) -> dict[str, Any]:
    """A validation error with a message a sender can act on: a product id or part tag that does not match its
    pattern (said in words, not as the regex); a time without its UTC offset (pydantic says only "Input should
    have timezone info"); a part without a file name arrives as a text field, and FastAPI says only
    "Expected UploadFile, received: <class 'str'>"."""
    if error.get("type") == "timezone_aware":
        return {**error, "msg": NO_OFFSET}
    if error.get("type") == "string_pattern_mismatch":
        meaning = next((m for p, m in PATTERN_MEANINGS.items() if f"'{p}'" in str(error.get("msg", ""))), None)
        return {**error, "msg": f"must be {meaning}"} if meaning else error
    if NOT_A_FILE not in str(error.get("msg", "")):
        return error
    loc = [p for p in error.get("loc", ()) if p != "body"]
    field = str(loc[0]) if loc else "images"
    return {
        **error,
        "msg": (
            "this part has no file name, so it arrived as a text field, not a file: give its Content-Disposition a "
            f'filename (form-data; name="{field}"; filename="frame.png") or a Content-Type such as image/png; '
            f'curl -F {field}=@frame.png and requests\' files=[("{field}", open("frame.png", "rb"))] both do'
        ),
    }


def describe_validation_errors(errors: list[dict]) -> str:
    """FastAPI's structured validation errors as one readable sentence."""
    parts = []
    for error in errors:
        if error.get("type") == "json_invalid":
            parts.append("the request body is not valid JSON")
            continue
        if error.get("type") == "model_attributes_type" and tuple(error.get("loc", ())) == ("body",):
            parts.append(NOT_AN_OBJECT)
            continue
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "request"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    """Answer domain errors by STATUS, validation errors and HTTP exceptions as JSON `detail` bodies, any other
    exception as a logged 500; and keep uvicorn from logging that exception a second time."""

    async def domain_error(_: Request, err: Exception) -> JSONResponse:
        return domain_error_response(err)

    for kind in STATUS:
        app.add_exception_handler(kind, domain_error)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, err: RequestValidationError) -> JSONResponse:
        errors = [explained({k: v for k, v in e.items() if k in ("loc", "msg", "type")}) for e in err.errors()]
        return error_response(422, describe_validation_errors(errors), errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        headers = dict(getattr(err, "headers", None) or {})
        if err.status_code == 405:
            headers["Allow"] = allowed_methods(request)
        return error_response(err.status_code, str(err.detail), headers or None)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, err: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        mark_logged(err)
        return error_response(500, f"internal error ({type(err).__name__}); see the service log")

    server_log = logging.getLogger(SERVER_LOGGER)
    if not any(isinstance(f, SkipLoggedErrors) for f in server_log.filters):
        server_log.addFilter(SkipLoggedErrors())


def allowed_methods(request: Request) -> str:
    """The `Allow` of a 405: the methods of every route whose path matches the request's (the router's own names
    only the first such route's, so GET /products/{id} hid DELETE /products/{id})."""
    path = get_route_path(request.scope)
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path):
            methods |= route.methods or set()
    return ", ".join(sorted(methods))


SERVER_LOGGER = "uvicorn.error"  # where uvicorn logs "Exception in ASGI application" with the traceback
_LOGGED = "_logged_by_service"


def mark_logged(err: BaseException) -> None:
    """Mark an exception as logged by the app, so SkipLoggedErrors drops the server's record of it."""
    with contextlib.suppress(AttributeError):  # a type without attributes: logged twice, nothing worse
        setattr(err, _LOGGED, True)


class SkipLoggedErrors(logging.Filter):
    """Drops the server's record of an exception the app has logged already. Starlette re-raises every
    exception after its 500 handler ran (so that servers can log it), and uvicorn would log the same traceback a
    second time, without the method and path ours names."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False (drop the record) for an exception `mark_logged` has marked, else True."""
        err = record.exc_info[1] if record.exc_info else None
        return not getattr(err, _LOGGED, False)
