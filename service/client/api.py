"""The service's HTTP API as a camera sees it: POST /inspect and reference uploads, retried with backoff.

What is retried: connection errors and timeouts, 429 (busy), 502/503/504 (down, starting, not ready) until
the service answers (or `max_attempts`), and other 5xx a few times. What is not: 400/413/415/422 say this
image or request is bad (`FrameError`); 401/403/404 and other 4xx say the client is misconfigured (wrong key,
unknown product: `ConfigurationError`), which no retry can fix.
"""

from __future__ import annotations

import logging
import mimetypes
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from service.client.names import upload_name

log = logging.getLogger(__name__)

TRANSIENT_STATUS = frozenset({429, 502, 503, 504})
FRAME_STATUS = frozenset({400, 413, 415, 422})

Upload = tuple[str, bytes]  # (file name, content)


class ApiError(Exception):
    """The service answered with an error, or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class FrameError(ApiError):
    """This request's images cannot be processed (bad image, too large, or repeated server errors)."""


class ConfigurationError(ApiError):
    """The client is misconfigured (API key, product, URL): stop and fix it; sending again cannot help."""


class RetriesExhausted(ApiError):
    """The service stayed unreachable or busy for `max_attempts` attempts."""


class Stopped(Exception):
    """The stop event was set while waiting to retry."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter; `Retry-After` from the service wins when present."""

    initial_s: float = 0.5
    max_s: float = 30.0
    factor: float = 2.0
    max_attempts: int | None = None  # None: keep trying while the service is down or busy
    server_error_attempts: int = 3  # a 500 may be caused by this very image: give up on it after this many

    def delay(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait before retry number `attempt` (0-based): Retry-After clamped to [0, max_s] when given, else a
        jittered exponential backoff."""
        if retry_after_s is not None:
            return min(max(retry_after_s, 0.0), self.max_s)
        ceiling = min(self.initial_s * self.factor**attempt, self.max_s)
        return random.uniform(ceiling / 2, ceiling)  # jitter: cameras restarted together do not retry in step


def error_detail(response: httpx.Response) -> str:
    """The service's JSON `detail` message, else the start of the body."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return str(detail) if detail else (response.text[:200] or response.reason_phrase)


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The Retry-After header in seconds, or None when absent or an HTTP date."""
    value = response.headers.get("retry-after", "")
    try:
        return float(value)
    except ValueError:
        return None  # absent, or an HTTP date: use our own backoff


class InspectApi:
    """A keep-alive HTTP client for one service. Not thread-safe: one per thread."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        retry: RetryPolicy | None = None,
        stop: threading.Event | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=timeout_s, transport=transport)
        self.retry = retry or RetryPolicy()
        self.stop = stop or threading.Event()

    def close(self) -> None:
        """Close the HTTP client's connections."""
        self.http.close()

    def __enter__(self) -> InspectApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def inspect(self, product_id: str, images: Sequence[Upload]) -> dict[str, Any]:
        """POST /inspect: `{"product_id", "reference_version", "results": [one per image, in order]}`. A file name
        that is not plain text is sent as `names.upload_name` says."""
        return self._post("/inspect", data={"product_id": product_id}, files=multipart(images)).json()

    def upload_references(self, product_id: str, images: Sequence[Upload]) -> dict[str, Any]:
        """POST /products/{id}/references: the new product summary."""
        return self._post(f"/products/{product_id}/references", data={}, files=multipart(images)).json()

    def _post(self, path: str, data: dict[str, str], files: list) -> httpx.Response:
        return self._with_retries(f"POST {path}", lambda: self.http.post(path, data=data, files=files))

    def _with_retries(self, what: str, send: Callable[[], httpx.Response]) -> httpx.Response:
        attempt = server_errors = 0
        while True:
            retry_after = None
            try:
                response = send()
            except httpx.TransportError as err:  # refused, reset, timed out: the service is down or restarting
                reason = f"{type(err).__name__}: {err}"
            else:
                if response.is_success:
                    return response
                status = response.status_code
                if status not in TRANSIENT_STATUS:
                    server_errors += status >= 500
                    if status < 500 or server_errors >= self.retry.server_error_attempts:
                        raise classify(response)
                reason, retry_after = f"HTTP {status}: {error_detail(response)}", retry_after_seconds(response)
            attempt += 1
            if self.retry.max_attempts is not None and attempt >= self.retry.max_attempts:
                attempts = "attempt" if attempt == 1 else "attempts"
                raise RetriesExhausted(f"{what}: gave up after {attempt} {attempts}; last: {reason}")
            delay = self.retry.delay(attempt - 1, retry_after)
            log.warning("%s: %s; retrying in %.1f s (attempt %d)", what, reason, delay, attempt + 1)
            if self.stop.wait(delay):
                raise Stopped(what)


def classify(response: httpx.Response) -> ApiError:
    """The exception for a non-retried error answer: FrameError for
    400/413/415/422 and 5xx, ConfigurationError for other 4xx."""
    status = response.status_code
    message = f"HTTP {status}: {error_detail(response)}"
    if status in FRAME_STATUS or status >= 500:
        return FrameError(message, status)
    return ConfigurationError(message, status)


def multipart(images: Sequence[Upload]) -> list[tuple[str, tuple[str, bytes, str]]]:
    """The `images` fields of a multipart body, each under a name any HTTP stack can carry."""
    return [("images", (upload_name(name), data, guess_type(name))) for name, data in images]


def guess_type(name: str) -> str:
    """The media type guessed from a file name's suffix, application/octet-stream when unknown."""
    return mimetypes.guess_type(name)[0] or "application/octet-stream"
