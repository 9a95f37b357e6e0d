"""Service test fixtures: real apps on the `tiny` detector (random weights, tests only) and small images."""

from __future__ import annotations

import io
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.calibration import Calibration
from service.settings import Settings

READY_TIMEOUT_S = 120


def tiny_settings(data_dir: Path, **overrides) -> Settings:
    return Settings(**{"model_config_name": "tiny", "device": "cpu", "data_dir": data_dir, **overrides})


@contextmanager
def running_app(settings: Settings) -> Iterator[TestClient]:
    """A TestClient around a real app whose model worker finished starting (ready or failed)."""
    with TestClient(create_app(settings)) as client:
        worker = client.app.state.services.worker
        assert worker.ready_event.wait(READY_TIMEOUT_S), "the model worker did not start in time"
        yield client


@pytest.fixture
def make_client(tmp_path: Path) -> Callable:
    """make_client(**settings) -> context manager of a TestClient on a fresh data dir (or `data_dir=`)."""

    def make(**overrides):
        overrides.setdefault("data_dir", tmp_path / "data")
        return running_app(tiny_settings(**overrides))

    return make


@pytest.fixture
def client(make_client) -> Iterator[TestClient]:
    with make_client() as test_client:
        yield test_client


def image_bytes(
    width: int = 48, height: int = 40, seed: int = 0, fmt: str = "PNG", mode: str = "RGB", defect: bool = False
) -> bytes:
    """A small textured image (the same texture for every seed-0 image); `defect` paints a bright square."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = (np.sin(xx / 3.0) + np.cos(yy / 4.0)) * 40 + 128  # (H, W)
    pixels = np.stack([base, base * 0.9, base * 0.8], axis=-1) + rng.normal(0, 4, (height, width, 3))
    if defect:
        pixels[height // 4 : height // 2, width // 4 : width // 2] = [255, 0, 255]
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    if mode != "RGB":
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def sample_tiff(pixels: np.ndarray) -> bytes:
    """(H, W) or (H, W, S) array -> an uncompressed little-endian one-strip TIFF with the array's own sample format
    (BitsPerSample, SampleFormat: unsigned, signed, float), which Pillow cannot write for int16, uint32, float64
    or float RGB."""
    pixels = np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("<"))
    height, width = pixels.shape[:2]
    samples = 1 if pixels.ndim == 2 else pixels.shape[2]
    bits = struct.pack(f"<{samples}H", *[pixels.dtype.itemsize * 8] * samples)  # BitsPerSample, one per sample
    kinds = struct.pack(f"<{samples}H", *[{"u": 1, "i": 2, "f": 3}[pixels.dtype.kind]] * samples)  # SampleFormat
    values_at = 8 + 2 + 11 * 12 + 4  # the per-sample lists follow the 11-entry directory, then the pixels

    def shorts(data: bytes, offset: int) -> bytes:  # a SHORT list: in the entry when it fits, else its offset
        return data.ljust(4, b"\0") if len(data) <= 4 else struct.pack("<I", offset)

    tags = [  # (tag, type 3 SHORT / 4 LONG, count, the entry's 4 value bytes), in tag order
        (256, 4, 1, struct.pack("<I", width)),
        (257, 4, 1, struct.pack("<I", height)),
        (258, 3, samples, shorts(bits, values_at)),
        (259, 3, 1, struct.pack("<HH", 1, 0)),  # no compression
        (262, 3, 1, struct.pack("<HH", 2 if samples == 3 else 1, 0)),  # RGB, else black is zero
        (273, 4, 1, struct.pack("<I", values_at + 2 * len(bits))),  # the strip's offset
        (277, 3, 1, struct.pack("<HH", samples, 0)),
        (278, 4, 1, struct.pack("<I", height)),
        (279, 4, 1, struct.pack("<I", pixels.nbytes)),
        (284, 3, 1, struct.pack("<HH", 1, 0)),  # samples interleaved
        (339, 3, samples, shorts(kinds, values_at + len(bits))),
    ]
    directory = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHI", *tag[:3]) + tag[3] for tag in tags)
    return b"II*\0" + struct.pack("<I", 8) + directory + b"\0" * 4 + bits + kinds + pixels.tobytes()


def files(*payloads: bytes, name: str = "images") -> list[tuple[str, tuple[str, bytes, str]]]:
    return [(name, (f"img{i}.png", data, "application/octet-stream")) for i, data in enumerate(payloads)]


def upload(client: TestClient, product_id: str, *payloads: bytes, **kwargs):
    return client.post(f"/products/{product_id}/references", files=files(*payloads), **kwargs)


def inspect(client: TestClient, product_id: str, *payloads: bytes, params=None, **kwargs):
    return client.post("/inspect", data={"product_id": product_id}, files=files(*payloads), params=params, **kwargs)


def decode_png(b64_or_bytes: str | bytes) -> np.ndarray:
    import base64

    data = base64.b64decode(b64_or_bytes) if isinstance(b64_or_bytes, str) else b64_or_bytes
    return np.asarray(Image.open(io.BytesIO(data)))


class PredictGate:
    """Holds the worker inside detector.predict until released: makes queueing and batching deterministic."""

    def __init__(self, worker) -> None:
        self.worker = worker
        self.entered = threading.Event()
        self.release = threading.Event()
        self.batch_sizes: list[int] = []
        self._original = worker.detector.predict

    def __enter__(self) -> PredictGate:
        def gated(images, refs):
            self.batch_sizes.append(len(images))
            self.entered.set()
            assert self.release.wait(60), "the test never released the gate"
            return self._original(images, refs)

        self.worker.detector.predict = gated
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.worker.detector.predict = self._original


@pytest.fixture
def slow_model(monkeypatch) -> threading.Event:
    """The model build waits until the returned event is set: the app stays in its loading state until then."""
    import service.app

    release = threading.Event()
    real = service.app.create_detector

    def slow_create_detector(*args, **kwargs):
        assert release.wait(60), "the test never let the model load"
        return real(*args, **kwargs)

    monkeypatch.setattr(service.app, "create_detector", slow_create_detector)
    return release


STORE_CALIBRATION = Calibration("leave-one-out", [0.1, 0.2], [0.3, 0.4], threshold=0.5, pixel_threshold=0.6)
"""A fixed calibration for store tests, which store products without calibrating them."""


@pytest.fixture(scope="module")
def refs(tiny_detector):
    """Two small references fitted by the tiny detector, for store tests."""
    images = [Image.open(io.BytesIO(image_bytes(40, 32, seed=s))).convert("RGB") for s in range(2)]
    return tiny_detector.fit_references(images)
