"""`--fetch-weights` (`make serve`): the service listens at once and fetches the missing weights in the background;
/healthz answers, /readyz reports the download's progress, the product routes answer meanwhile, and a failed
download is one line that the model routes answer with (503)."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from model import HubOptions
from service.app import create_app
from service.engine.download import WeightsDownload
from tests.helpers.apps import READY_TIMEOUT_S, fake_detector, tiny_settings
from tests.helpers.fakehub import DINO, fake_hub, publish, tiny_backbone_bytes


@pytest.fixture(scope="module")
def published():
    return tiny_backbone_bytes()


@pytest.fixture
def hub():
    with fake_hub() as hub:
        yield hub


def settings_with_weights(tmp_path):
    return tiny_settings(tmp_path / "data", weights_dir=tmp_path / "weights")


def app_fetching(settings, hub, built: list | None = None) -> TestClient:
    """An in-process app that fetches the settings' config (`tiny`, given a manifest here) from `hub`, then builds
    the fake detector."""

    def build(s):
        if built is not None:
            built.append(sorted(p.name for p in s.weights_dir.rglob("*.safetensors")))
        return fake_detector(s)

    download = WeightsDownload(HubOptions(endpoint=hub.url, backoff_s=0.01, read_timeout_s=10))
    return TestClient(create_app(settings, build, download=download))


def poll(client: TestClient, until, timeout_s: float = 30.0):
    """GET /readyz until `until(body)` holds; returns that body."""
    end = time.monotonic() + timeout_s
    while True:
        body = client.get("/readyz").json()
        if until(body) or time.monotonic() > end:
            return body
        time.sleep(0.02)


def test_the_service_answers_during_the_download_and_readyz_shows_its_progress(hub, published, tmp_path):
    settings = settings_with_weights(tmp_path)
    publish(hub, settings.weights_dir, {"dino": published["dino"]}, config="tiny")
    hub.faults.stall_after = 4000
    built = []
    with app_fetching(settings, hub, built) as client:
        body = poll(client, lambda b: "download" in b and b["download"]["bytes_done"] >= 4000)
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert body["status"] == "loading" and body["detail"].startswith("downloading the tiny weights: "), body
        assert "file 1 of 1 (tiny/dino.safetensors)" in body["detail"]
        progress = body["download"]
        assert progress["files_done"] == 0 and progress["files_total"] == 1
        assert progress["bytes_done"] == 4000 and progress["bytes_total"] == len(published["dino"])
        assert client.get("/products").status_code == 200, "product routes answer while the weights download"
        inspect = client.post("/inspect", data={"product_id": "bottle"}, files=[("images", ("a.png", b"x"))])
        assert inspect.status_code == 503
        hub.release()
        assert client.app.state.services.worker.ready_event.wait(READY_TIMEOUT_S)
        assert client.get("/readyz").status_code == 200
    assert built == [["dino.safetensors"]], "the model is built after the download, with the file in place"


def test_nothing_is_downloaded_when_the_files_are_present(hub, published, tmp_path):
    settings = settings_with_weights(tmp_path)
    publish(hub, settings.weights_dir, {"dino": published["dino"]}, config="tiny")
    with app_fetching(settings, hub) as client:
        assert client.app.state.services.worker.ready_event.wait(READY_TIMEOUT_S)
    hub.requests.clear()
    with app_fetching(settings, hub) as client:
        assert client.app.state.services.worker.ready_event.wait(READY_TIMEOUT_S)
        assert client.get("/readyz").json()["status"] == "ready"
    assert hub.requests == []


@pytest.mark.parametrize(
    ("broken", "expected"),
    [("repo", "HTTP 404"), ("offline", "cannot reach")],
)
def test_a_failed_download_is_one_line_that_model_routes_answer(hub, published, tmp_path, broken, expected):
    settings = settings_with_weights(tmp_path)
    hubs = {"dino": {**DINO, "repo": "timm/gone"}} if broken == "repo" else None
    publish(hub, settings.weights_dir, {"dino": published["dino"]}, config="tiny", hubs=hubs)
    if broken == "offline":
        hub.url = "http://127.0.0.1:9"  # the discard port: nothing listens
    with app_fetching(settings, hub) as client:
        assert client.app.state.services.worker.ready_event.wait(READY_TIMEOUT_S)
        ready = client.get("/readyz")
        detail = ready.json()["detail"]
        assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
        assert "\n" not in detail and expected in detail and "fetching the tiny weights failed" in detail, detail
        assert "python -m model.weights fetch tiny" in detail
        inspect = client.post("/inspect", data={"product_id": "bottle"}, files=[("images", ("a.png", b"x"))])
        assert inspect.status_code == 503 and inspect.json()["detail"] == detail
        assert client.get("/products").status_code == 200


@pytest.mark.parametrize("config", [{}, {"model_config_name": "edge", "random_init": True}])
def test_configs_without_weight_files_and_random_weights_fetch_nothing(hub, tmp_path, config):
    settings = tiny_settings(tmp_path / "data", weights_dir=tmp_path / "weights", **config)  # the project manifest
    with app_fetching(settings, hub) as client:
        assert client.app.state.services.worker.ready_event.wait(READY_TIMEOUT_S)
        assert client.get("/readyz").status_code == 200
    assert hub.requests == []
