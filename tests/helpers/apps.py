"""Apps in-process (FastAPI's TestClient) on a fresh data dir, and the requests tests send them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi.testclient import TestClient

from service.app import build_detector, create_app
from service.decisions.thresholds import Calibration
from service.settings import Settings
from tests.helpers.fake_detector import FakeDetector

READY_TIMEOUT_S = 120
STORE_CALIBRATION = Calibration("leave-one-out", [0.1, 0.2], [0.3, 0.4], threshold=0.5, pixel_threshold=0.6)
"""A fixed calibration for store tests, which store products without calibrating them."""


def tiny_settings(data_dir: Path, **overrides) -> Settings:
    """Settings of the `tiny` config on the CPU with its data in `data_dir`."""
    return Settings(**{"model_config_name": "tiny", "device": "cpu", "data_dir": data_dir, **overrides})


def fake_detector(settings: Settings) -> FakeDetector:
    """The app's detector factory for tests of the HTTP edge: see tests.helpers.fake_detector."""
    return FakeDetector(settings.device_cache_bytes)


@contextmanager
def running_app(settings: Settings, real_model: bool = False) -> Iterator[TestClient]:
    """A TestClient around a real app whose model worker finished starting (ready or failed); its detector is the
    FakeDetector unless `real_model` (the settings' own: the tiny config)."""
    with TestClient(create_app(settings, build_detector if real_model else fake_detector)) as client:
        worker = client.app.state.services.worker
        assert worker.ready_event.wait(READY_TIMEOUT_S), "the model worker did not start in time"
        yield client


def files(*payloads: bytes, name: str = "images") -> list[tuple[str, tuple[str, bytes, str]]]:
    """Multipart files `img0.png`, `img1.png`, ... in the field `name`."""
    return [(name, (f"img{i}.png", data, "application/octet-stream")) for i, data in enumerate(payloads)]


def upload(client: TestClient, product_id: str, *payloads: bytes, **kwargs):
    """POST the payloads as the product's references."""
    return client.post(f"/products/{product_id}/references", files=files(*payloads), **kwargs)


def inspect(client: TestClient, product_id: str, *payloads: bytes, params=None, **kwargs):
    """POST /inspect with the payloads."""
    return client.post("/inspect", data={"product_id": product_id}, files=files(*payloads), params=params, **kwargs)


def inspect_part(client: TestClient, product_id: str, payload: bytes, **tags) -> dict:
    """POST /inspect with one frame tagged with `tags` (part_id, station, ...); its result (asserts a 200)."""
    response = client.post("/inspect", data={"product_id": product_id, **tags}, files=files(payload))
    assert response.status_code == 200, response.text
    return response.json()["results"][0]


class ForwardGate:
    """Holds the model worker inside `detector.forward` until released: makes queueing and batching deterministic.
    `batch_sizes` records the frames of each forward."""

    def __init__(self, worker) -> None:
        self.worker = worker
        self.entered = threading.Event()
        self.release = threading.Event()
        self.batch_sizes: list[int] = []
        self._original = worker.detector.forward

    def __enter__(self) -> ForwardGate:
        def gated(batch, refs):
            self.batch_sizes.append(len(batch))
            self.entered.set()
            assert self.release.wait(60), "the test never released the gate"
            return self._original(batch, refs)

        self.worker.detector.forward = gated
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.worker.detector.forward = self._original


def in_background(function, *args) -> tuple[threading.Thread, list]:
    """Run `function(*args)` in a thread; its result lands in the returned list."""
    result: list = []
    thread = threading.Thread(target=lambda: result.append(function(*args)), daemon=True)
    thread.start()
    return thread, result
