"""The HTTP API through the real app and the tiny detector (random weights: behaviour, never accuracy)."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.api.errors import NOT_AN_OBJECT, SERVER_LOGGER
from service.app import create_app
from service.products.store import ProductStore
from tests.helpers.apps import files, inspect, tiny_settings, upload
from tests.helpers.images import decode_png, image_bytes

GOOD = image_bytes(48, 40, seed=0)
OTHER_GOOD = image_bytes(48, 40, seed=1)
DEFECT = image_bytes(52, 44, seed=2, defect=True)


def test_upload_then_inspect(client):
    created = upload(client, "widget", GOOD, OTHER_GOOD)
    assert created.status_code == 201, created.text
    summary = created.json()
    assert summary["product_id"] == "widget"
    assert summary["version"] == 1
    assert summary["n_references"] == 2
    assert summary["bank_size"] > 0
    assert summary["calibration"]["method"] == "leave-one-out"
    assert summary["mode"] == "training-free (random weights)"
    assert {"decode", "fit", "calibrate", "store"} <= set(summary["timings_ms"])

    answer = inspect(client, "widget", GOOD, DEFECT)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["product_id"] == "widget"
    assert body["reference_version"] == 1
    assert len(body["results"]) == 2
    for result, (width, height) in zip(body["results"], [(48, 40), (52, 44)], strict=True):
        assert result["threshold"] == summary["threshold"]
        assert result["anomalous"] == (result["score"] > result["threshold"])
        assert result["mode"] == "training-free (random weights)"
        assert {"decode", "queue", "predict", "encode"} <= set(result["timings_ms"])
        mask = decode_png(result["mask_png"])
        heat = decode_png(result["anomaly_map_png"])
        assert mask.shape == heat.shape == (height, width)
        assert set(np.unique(mask)) <= {0, 255}
        assert heat.dtype == np.uint8


def test_each_result_warns_about_a_frame_of_another_aspect(client):
    """A camera ROI or binning change must not go unseen: the frame is inspected, and its own result says so."""
    upload(client, "widget", GOOD, OTHER_GOOD)  # 48 x 40
    frames = (image_bytes(96, 80, seed=3), image_bytes(80, 40, seed=4), GOOD, image_bytes(40, 48, seed=5))
    results = inspect(client, "widget", *frames).json()["results"]
    assert [r["warnings"] for r in results[::2]] == [[], []]  # the references' aspect, at any size
    for result, size in zip(results[1::2], ("80 x 40", "40 x 48"), strict=True):
        (warning,) = result["warnings"]
        assert f"a {size} frame" in warning and "another aspect than its product's references" in warning
        assert decode_png(result["mask_png"]).shape == tuple(int(n) for n in size.split(" x ")[::-1])


def test_single_reference_is_calibrated_with_augmented_views(client):
    summary = upload(client, "one", GOOD).json()
    assert summary["n_references"] == 1
    assert summary["calibration"]["method"] == "augmented-views"
    assert summary["threshold"] > max(summary["calibration"]["normal_scores"])


def test_png_format_returns_the_mask_with_the_verdict_in_headers(client):
    upload(client, "widget", GOOD, OTHER_GOOD)
    as_json = inspect(client, "widget", DEFECT).json()["results"][0]
    answer = inspect(client, "widget", DEFECT, params={"format": "png"})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "image/png"
    assert float(answer.headers["X-Anomaly-Score"]) == pytest.approx(as_json["score"], rel=1e-5)
    assert answer.headers["X-Anomalous"] == str(as_json["anomalous"]).lower()
    assert float(answer.headers["X-Threshold"]) == as_json["threshold"]
    assert answer.headers["X-Reference-Version"] == "1"
    assert decode_png(answer.content).shape == (44, 52)


def test_png_format_takes_exactly_one_image(client):
    upload(client, "widget", GOOD)
    answer = inspect(client, "widget", GOOD, DEFECT, params={"format": "png"})
    assert answer.status_code == 422
    assert "exactly one image" in answer.json()["detail"]


def test_list_show_delete(client):
    upload(client, "b-product", GOOD)
    upload(client, "a-product", GOOD, OTHER_GOOD)
    listed = client.get("/products").json()["products"]
    assert [p["product_id"] for p in listed] == ["a-product", "b-product"]
    shown = client.get("/products/a-product").json()
    assert shown["n_references"] == 2
    assert client.delete("/products/a-product").status_code == 204
    assert client.get("/products/a-product").status_code == 404
    assert client.delete("/products/a-product").status_code == 404
    assert inspect(client, "a-product", GOOD).status_code == 404
    assert [p["product_id"] for p in client.get("/products").json()["products"]] == ["b-product"]


def test_reupload_replaces_the_version(client):
    upload(client, "widget", GOOD)
    second = upload(client, "widget", GOOD, OTHER_GOOD).json()
    assert second["version"] == 2
    assert inspect(client, "widget", GOOD).json()["reference_version"] == 2


def test_threshold_override_drives_verdict_and_mask(client):
    upload(client, "widget", GOOD, OTHER_GOOD)
    low = client.put("/products/widget/threshold", json={"threshold": -1.0, "pixel_threshold": -1.0})
    assert low.status_code == 200
    assert low.json()["threshold_source"] == "manual"
    result = inspect(client, "widget", GOOD).json()["results"][0]
    assert result["anomalous"] is True
    assert (decode_png(result["mask_png"]) == 255).all()

    assert low.json()["threshold_usable"] is False  # below every normal score: applied, with a warning
    assert any(
        w.startswith("unusable threshold: threshold -1 is below every normal score") for w in low.json()["warnings"]
    )

    high = client.put("/products/widget/threshold", json={"threshold": 1.99})  # the distance scale ends at 2
    assert high.json()["pixel_threshold_source"] == "calibrated" and high.json()["threshold_usable"] is True
    result = inspect(client, "widget", DEFECT).json()["results"][0]
    assert result["anomalous"] is False
    assert result["threshold"] == 1.99


@pytest.mark.parametrize(
    "body",
    [
        {"threshold": "high"},
        {},
        {"threshold": 0.5, "extra": 1},
        {"threshold": None},
        {"threshold": 1e308},  # past float32: the maps' comparison overflowed (RuntimeWarning in the log)
        {"threshold": 0.5, "pixel_threshold": -1e39},
    ],
)
def test_bad_threshold_bodies_are_422(client, body):
    upload(client, "widget", GOOD)
    answer = client.put("/products/widget/threshold", json=body)
    assert answer.status_code == 422
    assert isinstance(answer.json()["detail"], str) and answer.json()["detail"]


@pytest.mark.parametrize(
    ("path", "send"),
    [
        ("/products/widget/threshold", {"data": {"threshold": "0.3"}}),  # a form, as curl -d threshold=0.3 sends
        ("/products/widget/threshold", {"json": [0.3]}),
        ("/products/widget/rules", {"content": b"null", "headers": {"Content-Type": "application/json"}}),
    ],
)
def test_a_body_that_is_not_a_json_object_is_told_to_send_one(client, path, send):
    upload(client, "widget", GOOD)
    answer = client.put(path, **send)
    assert answer.status_code == 422
    assert answer.json()["detail"] == NOT_AN_OBJECT
    assert "JSON object" in NOT_AN_OBJECT and "application/json" in NOT_AN_OBJECT


def test_threshold_of_unknown_product_is_404(client):
    assert client.put("/products/nothing/threshold", json={"threshold": 1.0}).status_code == 404


def test_restart_keeps_products_and_scores(make_client):
    with make_client() as first:
        upload(first, "widget", GOOD, OTHER_GOOD)
        first.put("/products/widget/threshold", json={"threshold": 0.25})
        before = inspect(first, "widget", DEFECT).json()["results"][0]
    with make_client() as second:
        after = inspect(second, "widget", DEFECT).json()["results"][0]
        assert second.get("/products/widget").json()["threshold_source"] == "manual"
    assert after["score"] == pytest.approx(before["score"], rel=1e-5)
    assert after["threshold"] == 0.25


def test_replace_racing_with_inspections_never_fails(client):
    upload(client, "widget", GOOD)
    statuses, versions = [], set()

    def inspect_repeatedly():
        for _ in range(6):
            answer = inspect(client, "widget", DEFECT)
            statuses.append(answer.status_code)
            versions.add(answer.json().get("reference_version"))

    threads = [threading.Thread(target=inspect_repeatedly) for _ in range(2)]
    for thread in threads:
        thread.start()
    for _ in range(3):
        assert upload(client, "widget", GOOD, OTHER_GOOD).status_code == 201
    for thread in threads:
        thread.join()
    assert set(statuses) == {200}
    assert versions <= {1, 2, 3, 4}
    assert client.get("/products/widget").json()["version"] == 4


def test_missing_weights_keep_the_service_up_and_say_why(make_client, tmp_path):
    with make_client(real_model=True, model_config_name="edge", weights_dir=tmp_path / "no-weights") as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503
        message = ready.json()["detail"]
        assert "python -m model.weights fetch edge" in message
        for answer in (inspect(client, "widget", GOOD), upload(client, "widget", GOOD)):
            assert answer.status_code == 503
            assert answer.json()["detail"] == message
        assert client.get("/products").json() == {"products": []}  # product routes need no model


@pytest.mark.parametrize(
    ("setting", "expected"),
    [({"model_config_name": "nope"}, "unknown config 'nope'"), ({"device": "tpu9"}, "unknown device 'tpu9'")],
)
def test_bad_model_settings_keep_the_service_up_and_say_why(make_client, setting, expected):
    with make_client(real_model=True, **setting) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert expected in ready.json()["detail"]


def test_model_routes_wait_for_readiness(tmp_path, slow_model):
    release = slow_model
    with TestClient(create_app(tiny_settings(tmp_path))) as client:
        assert client.get("/healthz").status_code == 200
        loading = client.get("/readyz")
        assert loading.status_code == 503
        assert loading.json()["status"] == "loading"
        busy = inspect(client, "widget", GOOD)
        assert busy.status_code == 503
        assert busy.headers["Retry-After"]
        release.set()
        assert client.app.state.services.worker.ready_event.wait(60)
        assert client.get("/readyz").status_code == 200


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_an_unexpected_error_is_a_json_500_logged_once(tmp_path, monkeypatch, caplog):
    def broken(_store):
        raise RuntimeError("disk on fire")

    with TestClient(create_app(tiny_settings(data_dir=tmp_path / "data")), raise_server_exceptions=False) as client:
        monkeypatch.setattr(ProductStore, "all", broken)
        answer = client.get("/products")
    assert answer.status_code == 500
    assert answer.json()["detail"] == "internal error (RuntimeError); see the service log"
    ours = [r for r in caplog.records if r.exc_info and "disk on fire" in str(r.exc_info[1])]
    assert [r.getMessage() for r in ours] == ["unexpected error on GET /products"]

    # Starlette re-raises it to the server, which logs "Exception in ASGI application" with it: that record of
    # the same exception is dropped; one of an exception the app never saw is kept
    server_log, seen = logging.getLogger(SERVER_LOGGER), Collect()
    server_log.addHandler(seen)
    try:
        server_log.error("Exception in ASGI application\n", exc_info=ours[0].exc_info[1])
        server_log.error("Exception in ASGI application\n", exc_info=RuntimeError("not seen by the app"))
    finally:
        server_log.removeHandler(seen)
    assert [str(r.exc_info[1]) for r in seen.records] == ["not seen by the app"]


def test_a_product_that_vanishes_during_a_threshold_update_or_delete_is_a_404(client, monkeypatch):
    """The store found no product to change, but one exists by the time the route looks again (another replica
    re-created it): a 404 for the request as it was handled, never a 500 or a 204 for a delete that did nothing."""
    assert upload(client, "widget", GOOD).status_code == 201
    monkeypatch.setattr(ProductStore, "set_thresholds", lambda *_: None)
    monkeypatch.setattr(ProductStore, "delete", lambda *_: False)
    updated = client.put("/products/widget/threshold", json={"threshold": 0.5})
    assert updated.status_code == 404, updated.text
    assert "unknown product 'widget'" in updated.json()["detail"]
    assert client.delete("/products/widget").status_code == 404


def test_a_lost_store_folder_answers_503_naming_it_and_serves_again_once_it_is_back(client, caplog):
    """The reviewer's case: the blob folder is moved away and a file put in its place (a lost mount). Every
    store and model route, and /readyz, answer 503 naming the folder; nothing is forgotten; its return heals all."""
    assert upload(client, "widget", GOOD, OTHER_GOOD).status_code == 201
    store = client.app.state.services.store
    moved = store.root.with_name("products.bak")
    store.root.rename(moved)
    store.root.touch()
    answers = {
        "list": client.get("/products"),
        "show": client.get("/products/widget"),
        "evaluation": client.get("/products/widget/evaluation"),
        "rules": client.get("/products/widget/rules"),
        "threshold": client.put("/products/widget/threshold", json={"threshold": 0.5}),
        "delete": client.delete("/products/widget"),
        "upload": upload(client, "widget", GOOD),
        "inspect": inspect(client, "widget", GOOD),
    }
    for route, answer in answers.items():
        assert answer.status_code == 503, (route, answer.text)
        assert answer.json()["detail"] == store.unavailable_reason, route
    assert f"the product store {store.root} is unavailable (NotADirectoryError" in store.unavailable_reason
    store.refresh()  # what the store poll does: nothing is dropped
    assert len(store) == 1
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json() == {"ready": False, "status": "unavailable", "detail": store.unavailable_reason}

    store.root.unlink()
    moved.rename(store.root)
    store.refresh()
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["products"] == 1
    assert [p["product_id"] for p in client.get("/products").json()["products"]] == ["widget"]
    assert inspect(client, "widget", GOOD).status_code == 200
    errors = [r for r in caplog.records if r.name == "service.products.store" and r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].exc_info is None


def test_the_part_fields_are_echoed_in_each_result(client):
    upload(client, "widget", GOOD, OTHER_GOOD)
    tags = {
        "part_id": "P-000417",
        "station": "line1-st3",
        "camera": "top",
        "view": "top-ring-light",
        "trigger_time": "2026-12-06T22:15:00.125Z",
    }
    answer = client.post("/inspect", data={"product_id": "widget", **tags}, files=files(GOOD, DEFECT))
    assert answer.status_code == 200, answer.text
    for result in answer.json()["results"]:
        assert {key: result[key] for key in tags} == {**tags, "trigger_time": "2026-12-06T22:15:00.125000Z"}
    untagged = inspect(client, "widget", GOOD).json()["results"][0]
    assert [untagged[key] for key in tags] == [None, None, None, None, None]


@pytest.mark.parametrize(
    "field, value",
    [
        ("part_id", " P-1"),
        ("station", "x" * 129),
        ("camera", "top\ncam"),
        ("view", "top\tring"),
        ("trigger_time", "yesterday"),
    ],
)
def test_a_bad_part_field_is_422(client, field, value):
    upload(client, "widget", GOOD, OTHER_GOOD)
    answer = client.post("/inspect", data={"product_id": "widget", field: value}, files=files(GOOD))
    assert answer.status_code == 422, answer.text
    assert field in answer.text


@pytest.mark.parametrize(
    ("method", "path", "data", "detail"),
    [
        ("post", "/inspect", {"product_id": "widget", "part_id": "Prüfteil-1"}, "part_id: must be 1-128 printable"),
        ("post", "/inspect", {"product_id": "widget", "station": "line 1 "}, "station: must be 1-128 printable"),
        ("post", "/inspect", {"product_id": "bad id"}, "product_id: must be 1-64 letters, digits"),
        ("post", "/products/bad%20id/references", {}, "path.product_id: must be 1-64 letters, digits"),
        ("get", "/inspections?part_id=%09SN-1", None, "query.part_id: must be 1-128 printable"),
    ],
)
def test_a_text_that_misses_its_pattern_is_told_the_rule_in_words(client, method, path, data, detail):
    """The 422 quoted the regex ('String should match pattern ^[\\x21-\\x7e](?:...') where the sender needs the rule."""
    upload(client, "widget", GOOD, OTHER_GOOD)
    kwargs = {"data": data, "files": files(GOOD)} if method == "post" else {}
    answer = getattr(client, method)(path, **kwargs)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"].startswith(detail) and "pattern" not in answer.json()["detail"]


@pytest.mark.parametrize("value", ["2026-12-06T22:15:00", "2026-12-06T22:15:00.125", "2026-12-06 22:15"])
def test_a_trigger_time_without_its_utc_offset_is_422_not_read_as_utc(client, value):
    """A PLC clock in local time sent without an offset was echoed as sent and recorded as UTC: every latency and
    time filter of the line off by its zone."""
    upload(client, "widget", GOOD, OTHER_GOOD)
    answer = client.post("/inspect", data={"product_id": "widget", "trigger_time": value}, files=files(GOOD))
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"].startswith("trigger_time: a time without a UTC offset is ambiguous")
    for aware in ("2026-12-06T22:15:00Z", "2026-12-06T23:15:00+01:00"):
        answer = client.post("/inspect", data={"product_id": "widget", "trigger_time": aware}, files=files(GOOD))
        assert answer.status_code == 200, answer.text
        assert answer.json()["results"][0]["trigger_time"] in ("2026-12-06T22:15:00Z", "2026-12-06T23:15:00+01:00")
