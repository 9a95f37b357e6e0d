"""The one wait helper: poll a condition until it holds, with a deadline and a message that says what was awaited."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

TRANSIENT = (httpx.HTTPError, OSError, ValueError, KeyError)  # a server still starting, a half-written answer


def wait_for(condition: Callable[[], Any], what: str, timeout_s: float = 60.0, interval_s: float = 0.02) -> Any:
    """Poll `condition()` until it is truthy and return its value; transient errors (TRANSIENT) count as "not yet".
    Fails the test naming `what` (and the last error) after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except TRANSIENT as err:
            last_error = err
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s:g} s waiting for {what} (last error: {last_error})")
