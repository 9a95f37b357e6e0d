"""The service as the station sees it: one POST /inspect per part, within the reject window, no retries.

Every failure is an `InspectFailed` with its `ErrorCode`: the part gets an ERROR, the next part a new try.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import httpx

from station.camera import Frame
from station.codes import ErrorCode

FRAME_STATUS = frozenset({400, 413, 415, 422})
CONFIGURATION_STATUS = frozenset({401, 403, 404})
BUSY_STATUS = frozenset({429, 503})
# the service's rule for part_id, station, camera and view (service/imaging/formats.py TAG_TEXT): 1-128 printable
# ASCII characters, no space at either end
TAG = re.compile(r"^[\x21-\x7e](?:[\x20-\x7e]{0,126}[\x21-\x7e])?$")
RANDOM_WEIGHTS = "(random weights)"  # how the service's `mode` says its scores mean nothing (tiny, RANDOM_INIT)


class InspectFailed(Exception):
    """The service gave no verdict for the part: `code` says why."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Part:
    """What the line says about the part in front of the camera."""

    product_id: str
    part_id: str | None = None
    trigger_time: datetime | None = None  # wall clock, UTC


@dataclass(frozen=True)
class Inspection:
    """The service's verdict on one frame."""

    anomalous: bool
    score: float
    threshold: float
    n_regions: int
    inspection_id: str
    rule: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)  # the service's decode, queue, predict, encode, ...
    regions: tuple[dict[str, Any], ...] = ()  # the service's regions, as it answers them
    views: tuple[dict[str, Any], ...] = ()  # a multi-view part's results per view (station.views)


class Inspector(Protocol):
    """Asks for a verdict; raises InspectFailed."""

    def inspect(self, frame: Frame, part: Part, timeout_s: float) -> Inspection:
        """The verdict on `frame` within `timeout_s` seconds; raises InspectFailed."""
        ...

    def check_product(self, product_id: str, timeout_s: float) -> None:
        """Raises InspectFailed unless the service has references for `product_id` (a changeover's check)."""
        ...


class HttpInspector:
    """POST /inspect with the part's fields (`part_id`, `station`, `camera`, `view`, `trigger_time`). Thread-safe.
    A verdict of a service that runs random weights is refused (CONFIGURATION) unless `allow_random_weights`: an
    OK from it would pass any part."""

    def __init__(
        self,
        url: str,
        api_key: str | None,
        station: str,
        camera: str,
        transport: httpx.BaseTransport | None = None,
        view: str | None = None,
        allow_random_weights: bool = False,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=url, headers=headers, transport=transport)
        self.station, self.camera, self.view = station, camera, view
        self.allow_random_weights = allow_random_weights

    def inspect(self, frame: Frame, part: Part, timeout_s: float) -> Inspection:
        """One request, no retry (the part cannot wait); raises InspectFailed (CONFIGURATION, before any request,
        for a part id the service would refuse: the PLC's to fix, not the frame's)."""
        if part.part_id and not TAG.fullmatch(part.part_id):
            raise InspectFailed(
                ErrorCode.CONFIGURATION,
                f"part id {part.part_id[:40]!r}{'...' if len(part.part_id) > 40 else ''} is not 1-128 printable ASCII "
                "characters without a space at either end, which the service refuses: fix the part ids the PLC sends",
            )
        data = {"product_id": part.product_id, "station": self.station, "camera": self.camera}
        if part.part_id:
            data["part_id"] = part.part_id
        if self.view:
            data["view"] = self.view
        if part.trigger_time:
            data["trigger_time"] = part.trigger_time.isoformat()
        files = [("images", (frame.filename, frame.data, "application/octet-stream"))]
        # verdict only: the station reads no mask or heat map, so the service encodes none
        response = self.send("POST", "/inspect", timeout_s, params={"outputs": "verdict"}, data=data, files=files)
        try:
            result = response.json()["results"][0]
            mode = str(result.get("mode") or "")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as err:
            raise InspectFailed(ErrorCode.SERVICE_ERROR, f"unreadable answer from the service: {err!r}") from err
        if RANDOM_WEIGHTS in mode and not self.allow_random_weights:
            raise InspectFailed(
                ErrorCode.CONFIGURATION,
                f"the service runs random weights (mode {mode!r}): its verdicts mean nothing; give it real weights "
                "(DCPSFR_MODEL_CONFIG, python -m model.weights fetch), or set service.allow_random_weights: true "
                "(tests only)",
            )
        try:
            return Inspection(
                anomalous=bool(result["anomalous"]),
                score=float(result["score"]),
                threshold=float(result["threshold"]),
                n_regions=int(result["n_regions"]),
                inspection_id=str(result["inspection_id"]),
                rule=result.get("rule"),
                timings_ms={str(k): float(v) for k, v in result.get("timings_ms", {}).items()},
                regions=tuple(dict(region) for region in result.get("regions", [])),
            )
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise InspectFailed(ErrorCode.SERVICE_ERROR, f"unreadable answer from the service: {err!r}") from err

    def check_product(self, product_id: str, timeout_s: float) -> None:
        """GET /products/{id}; raises InspectFailed (CONFIGURATION for an unknown product)."""
        self.send("GET", f"/products/{product_id}", timeout_s)

    def send(self, method: str, path: str, timeout_s: float, **kwargs: Any) -> httpx.Response:
        """The response when it is a success; raises InspectFailed with the code of the failure."""
        try:
            response = self.http.request(method, path, timeout=timeout_s, **kwargs)
        except httpx.TimeoutException as err:
            raise InspectFailed(
                ErrorCode.SERVICE_TIMEOUT, f"{method} {path}: no answer within {timeout_s:g} s"
            ) from err
        except httpx.TransportError as err:
            raise InspectFailed(ErrorCode.SERVICE_UNREACHABLE, f"{method} {path}: {type(err).__name__}: {err}") from err
        if response.is_success:
            return response
        raise InspectFailed(
            status_code(response.status_code), f"{method} {path}: HTTP {response.status_code}: {detail(response)}"
        )

    def close(self) -> None:
        """Close the connections."""
        self.http.close()


def status_code(status: int) -> ErrorCode:
    """The error code of an HTTP error status."""
    if status in FRAME_STATUS:
        return ErrorCode.FRAME_REJECTED
    if status in CONFIGURATION_STATUS:
        return ErrorCode.CONFIGURATION
    if status in BUSY_STATUS:
        return ErrorCode.SERVICE_BUSY
    if status == 504:
        return ErrorCode.SERVICE_TIMEOUT
    if status == 502:
        return ErrorCode.SERVICE_UNREACHABLE
    return ErrorCode.SERVICE_ERROR


def detail(response: httpx.Response) -> str:
    """The service's JSON `detail`, else the start of the body."""
    try:
        found = response.json().get("detail")
    except (ValueError, AttributeError):
        found = None
    return str(found) if found else response.text[:200]
