"""API errors: every failure a client can cause is a 4xx with a JSON `detail` message that says what was wrong."""

from __future__ import annotations

import contextlib
import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answered as `{"detail": message}` with `status` (and optional headers)."""

    status = 400

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadImage(ApiError):
    """400: an image format we know, but the bytes do not decode."""

    status = 400  # an image format we know, but the bytes do not decode


class Unauthorized(ApiError):
    """401: no usable API key."""

    status = 401


class Forbidden(ApiError):
    """403: a wrong API key."""

    status = 403


class NotFound(ApiError):
    """404: an unknown product, inspection or file."""

    status = 404


class Conflict(ApiError):
    """409: the product changed (another upload or a delete) while this request ran."""

    status = 409  # the product changed (another upload or a delete) while this request was processed


class PayloadTooLarge(ApiError):
    """413: body, pixels or image count over a limit."""

    status = 413


class UnsupportedMedia(ApiError):
    """415: not an image, or an image format the service does not accept."""

    status = 415  # not an image, or an image format we do not accept


class InvalidField(ApiError):
    """422: a field or parameter with a bad value."""

    status = 422


class Overloaded(ApiError):
    """429: the model queue is full (sent with Retry-After)."""

    status = 429


class StorageFailed(ApiError):
    """507: the data dir could not store the change; the previous state is still current."""

    status = 507  # the data dir could not take a new version; the previous one is still current


class Unavailable(ApiError):
    """503: the model (or the product store) is loading, unavailable, or the service is shutting down."""

    status = 503


class ErrorBody(BaseModel):
    """The body of every error answer (the OpenAPI schema of each declared error status)."""

    detail: str = Field(description="what was wrong, in one sentence")
    errors: list[dict[str, Any]] | None = Field(None, description="422 only: each invalid field (loc, msg, type)")


ERROR_MEANINGS = {
    400: "an image, or the request body, does not decode",
    401: "missing API key (when DCPSFR_API_KEYS is set)",
    403: "wrong API key",
    404: "unknown product",
    409: "the product changed (another upload or a delete) while this request ran",
    413: "body, pixels or image count over the limit",
    415: "not an accepted image (PNG, JPEG, BMP, TIFF)",
    422: "bad field",
    429: "queue full: retry after Retry-After seconds",
    503: "model loading or unavailable, or the products folder unavailable",
    504: "the model did not answer within DCPSFR_WORKER_TIMEOUT_S",
    507: "the data dir could not store the change; the previous state is still current",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for a route or router: each status with its meaning and the ErrorBody schema, always
    as JSON (inline, so a route whose own answers are not JSON, such as /metrics, still documents JSON errors)."""
    content = {"application/json": {"schema": ErrorBody.model_json_schema()}}
    return {
        status: {"description": ERROR_MEANINGS.get(status) or HTTPStatus(status).phrase, "content": content}
        for status in statuses
    }


class GatewayTimeout(ApiError):
    """504: the model worker did not answer within DCPSFR_WORKER_TIMEOUT_S."""

    status = 504  # the model worker did not answer within DCPSFR_WORKER_TIMEOUT_S


def error_response(status: int, message: str, headers: dict[str, str] | None = None, **extra) -> JSONResponse:
    """A JSON error answer `{"detail": message, **extra}` with this status and headers."""
    return JSONResponse({"detail": message, **extra}, status_code=status, headers=headers)


def describe_validation_errors(errors: list[dict]) -> str:
    """FastAPI's structured validation errors as one readable sentence."""
    parts = []
    for error in errors:
        if error.get("type") == "json_invalid":
            parts.append("the request body is not valid JSON")
            continue
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "request"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    """Answer ApiErrors, validation errors and HTTP exceptions as JSON `detail` bodies, any other exception as a logged
    500; and keep uvicorn from logging that exception a second time."""

    @app.exception_handler(ApiError)
    async def api_error(_: Request, err: ApiError) -> JSONResponse:
        return error_response(err.status, err.message, err.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, err: RequestValidationError) -> JSONResponse:
        errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in err.errors()]
        return error_response(422, describe_validation_errors(errors), errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
        return error_response(err.status_code, str(err.detail), getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, err: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        mark_logged(err)
        return error_response(500, f"internal error ({type(err).__name__}); see the service log")

    server_log = logging.getLogger(SERVER_LOGGER)
    if not any(isinstance(f, SkipLoggedErrors) for f in server_log.filters):
        server_log.addFilter(SkipLoggedErrors())


SERVER_LOGGER = "uvicorn.error"  # where uvicorn logs "Exception in ASGI application" with the traceback
_LOGGED = "_logged_by_service"


def mark_logged(err: BaseException) -> None:
    """Mark an exception as logged by the app, so SkipLoggedErrors drops the server's record of it."""
    with contextlib.suppress(AttributeError):  # a type without attributes: logged twice, nothing worse
        setattr(err, _LOGGED, True)


class SkipLoggedErrors(logging.Filter):
    """Drops the server's record of an exception the app has logged already. Starlette re-raises every
    exception after its 500 handler ran (so that servers can log it), and uvicorn then logged the same traceback
    a second time, without the method and path ours names."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False (drop the record) for an exception `mark_logged` has marked, else True."""
        err = record.exc_info[1] if record.exc_info else None
        return not getattr(err, _LOGGED, False)
