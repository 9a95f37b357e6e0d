"""Service fixtures: apps in-process on a fresh data dir (the FakeDetector unless a test asks for the tiny model)."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.helpers.apps import running_app, tiny_settings
from tests.helpers.images import image_bytes


@pytest.fixture
def make_client(tmp_path: Path) -> Callable:
    """make_client(real_model=False, **settings) -> context manager of a TestClient on a fresh data dir (or
    `data_dir=`)."""

    def make(real_model: bool = False, **overrides):
        overrides.setdefault("data_dir", tmp_path / "data")
        return running_app(tiny_settings(**overrides), real_model=real_model)

    return make


@pytest.fixture
def client(make_client) -> Iterator[TestClient]:
    """An app with the FakeDetector on a fresh data dir."""
    with make_client() as test_client:
        yield test_client


@pytest.fixture
def slow_model(monkeypatch) -> threading.Event:
    """The model build waits until the returned event is set: the app stays in its loading state until then."""
    import tests.helpers.apps

    release = threading.Event()

    def slowly(build):
        def slow_build(*args, **kwargs):
            assert release.wait(60), "the test never let the model load"
            return build(*args, **kwargs)

        return slow_build

    import service.app

    for module, name in (  # whichever the app is built with
        (tests.helpers.apps, "fake_detector"),
        (tests.helpers.apps, "build_detector"),
        (service.app, "create_detector"),
    ):
        monkeypatch.setattr(module, name, slowly(getattr(module, name)))
    return release


@pytest.fixture(scope="module")
def refs(tiny_detector):
    """Two small references fitted by the tiny detector, for store tests."""
    images = [Image.open(io.BytesIO(image_bytes(40, 32, seed=s))).convert("RGB") for s in range(2)]
    return tiny_detector.fit_references(images)
