"""Fakes for the station's unit tests: a camera and an inspector that do what each test tells them."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from station.camera import CameraTimeout, Frame
from station.handshake import Handshake, ProductTable, Settings
from station.inspector import Inspection, Part
from station.metrics import StationMetrics

GOOD = Inspection(
    anomalous=False,
    score=0.25,
    threshold=0.5,
    n_regions=0,
    inspection_id="i-good",
    timings_ms={"decode": 1.0, "queue": 0.5, "predict": 20.0, "encode": 2.0},
)
BAD = Inspection(
    anomalous=True,
    score=0.75,
    threshold=0.5,
    n_regions=2,
    inspection_id="i-bad",
    rule="threshold",
    timings_ms={"decode": 1.0, "queue": 0.5, "predict": 20.0, "encode": 2.0},
)


@dataclass
class FakeCamera:
    """Gives `frame` on each acquire, or runs `behaviour` (raise, or block) when set."""

    name: str = "fake-cam"
    behaviour: Callable[[float], Frame] | None = None
    acquired: int = 0

    def acquire(self, timeout_s: float) -> Frame:
        self.acquired += 1
        if self.behaviour is not None:
            return self.behaviour(timeout_s)
        return Frame(b"png bytes", f"frame-{self.acquired}.png")

    def close(self) -> None:
        pass


@dataclass
class FakeInspector:
    """Answers `answers` in turn (an Inspection, or an exception to raise, or a callable to run); records the parts.
    `products` are the ids it knows for a changeover."""

    answers: list = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)
    products: set[str] = field(default_factory=lambda: {"bottle", "cable"})

    def inspect(self, frame: Frame, part: Part, timeout_s: float) -> Inspection:
        self.parts.append(part)
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer(timeout_s) if callable(answer) else answer

    def check_product(self, product_id: str, timeout_s: float) -> None:
        from station.codes import ErrorCode
        from station.inspector import InspectFailed

        if product_id not in self.products:
            raise InspectFailed(ErrorCode.CONFIGURATION, f"HTTP 404: unknown product {product_id!r}")


def never_answers(release: threading.Event) -> Callable[[float], object]:
    """A call that hangs until `release` is set (the test sets it at teardown)."""

    def hang(timeout_s: float) -> object:
        release.wait(30)
        raise CameraTimeout("released")

    return hang


@pytest.fixture
def release() -> threading.Event:
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
def make_station() -> Callable[..., tuple[Handshake, FakeCamera, FakeInspector]]:
    """make_station(*answers, **settings) -> (handshake, camera, inspector); products 1 bottle, 2 cable."""

    def make(*answers, starting: bool = False, **settings) -> tuple[Handshake, FakeCamera, FakeInspector]:
        camera, inspector = FakeCamera(), FakeInspector(list(answers))
        settings = {"acquire_timeout_s": 0.05, "inspect_timeout_s": 0.05, "changeover_timeout_s": 0.05, **settings}
        table = ProductTable({1: "bottle", 2: "cable"})
        handshake = Handshake(camera, inspector, table, "bottle", Settings(**settings), StationMetrics(), (), starting)
        return handshake, camera, inspector

    return make
