"""Nothing hangs, nothing is decoded in vain: the guarded worker loop, worker timeouts, adaptive batching,
admission before decoding, the per-request pixel budget, and product routes that need no model."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

import service.app
import service.engine.pipeline
from model import WeightsMissingError
from service.app import create_app
from tests.helpers.apps import ForwardGate, in_background, inspect, tiny_settings, upload
from tests.helpers.images import image_bytes
from tests.helpers.waiting import wait_for

GOOD = image_bytes(48, 40, seed=0)
OTHER = image_bytes(48, 40, seed=1)


def count_decodes(monkeypatch) -> list[int]:
    """How many images reached pixel decoding (after admission and the header checks)."""
    calls: list[int] = []
    real = service.engine.pipeline.decode_opened

    def counted(image, name):
        calls.append(1)
        return real(image, name)

    monkeypatch.setattr(service.engine.pipeline, "decode_opened", counted)
    return calls


def test_a_fault_outside_a_forward_fails_held_requests_and_marks_the_worker_failed(make_client):
    with make_client() as client:
        assert upload(client, "p1", GOOD).status_code == 201
        worker = client.app.state.services.worker

        def broken_collect(first):
            raise RuntimeError("bookkeeping bug")

        worker._collect = broken_collect  # a fault in the loop itself, not in detector.predict
        answer = inspect(client, "p1", GOOD)
        assert answer.status_code == 503
        assert "the model worker failed: RuntimeError: bookkeeping bug" in answer.json()["detail"]
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "bookkeeping bug" in ready.json()["detail"]
        assert worker.state == "failed"
        after = inspect(client, "p1", GOOD)  # refused at once, never queued behind a dead worker
        assert after.status_code == 503 and "bookkeeping bug" in after.json()["detail"]
        assert client.get("/products/p1").status_code == 200  # stored products still answer


def test_a_request_waits_for_the_worker_at_most_the_timeout(make_client):
    with make_client() as client:
        assert upload(client, "p1", GOOD).status_code == 201
        worker = client.app.state.services.worker
        worker.timeout_s = 0.5  # DCPSFR_WORKER_TIMEOUT_S, only while the forward is held
        with ForwardGate(worker) as gate:
            answer = inspect(client, "p1", GOOD)  # the forward is held far longer than the timeout
            assert gate.entered.is_set()
            gate.release.set()
        assert answer.status_code == 504
        assert "DCPSFR_WORKER_TIMEOUT_S" in answer.json()["detail"]
        worker.timeout_s = 120.0  # a busy test machine may need more than 0.5 s for a real forward
        assert inspect(client, "p1", GOOD).status_code == 200  # the worker itself is fine


def test_a_request_at_an_idle_worker_is_not_held_for_the_batching_wait(make_client):
    with make_client(max_wait_ms=20_000) as client:
        assert upload(client, "p1", GOOD).status_code == 201
        answer = inspect(client, "p1", GOOD)
        assert answer.status_code == 200
        # the old fixed wait held every lone request for max_wait_ms (20 s) before its forward
        assert answer.json()["results"][0]["timings_ms"]["queue"] < 10_000


def test_the_worker_waits_for_requests_still_decoding_and_batches_them(make_client):
    with make_client(max_wait_ms=20_000) as client:
        assert upload(client, "p1", GOOD).status_code == 201
        services = client.app.state.services
        worker, product = services.worker, services.store.get("p1")
        image = Image.open(io.BytesIO(GOOD)).convert("RGB")
        batch = worker.detector.prepare([image], product.refs)
        with ForwardGate(worker) as gate:
            first = worker.submit_forward(product.refs, batch)
            assert gate.entered.wait(30)
            queued = worker.submit_forward(product.refs, batch)
            decoding = worker.admit()  # a request admitted and still decoding: known to be coming
            gate.release.set()
            wait_for(lambda: len(gate.batch_sizes) == 1 and worker.queue.qsize() == 0, "the first forward")
            late = worker.submit_forward(product.refs, batch, decoding)
            for future in (first, queued, late):
                assert len(future.result(60).scores) == 1
        assert gate.batch_sizes == [1, 2]  # the queued request waited for the decoding one, in one forward


def test_refusals_come_before_any_decoding(make_client, monkeypatch):
    decodes = count_decodes(monkeypatch)
    with make_client(queue_size=1) as client:
        assert upload(client, "p1", GOOD).status_code == 201
        decodes.clear()
        worker = client.app.state.services.worker
        with ForwardGate(worker) as gate:
            busy, _ = in_background(inspect, client, "p1", GOOD)
            assert gate.entered.wait(30)
            queued, _ = in_background(inspect, client, "p1", GOOD)
            wait_for(lambda: worker.queue.qsize() == 1, "one queued request")
            assert len(decodes) == 2
            for refused in (inspect(client, "p1", GOOD, OTHER), upload(client, "p2", GOOD)):
                assert refused.status_code == 429 and "queue is full" in refused.json()["detail"]
            assert len(decodes) == 2  # neither refused request decoded a pixel
            gate.release.set()
            busy.join(30)
            queued.join(30)


def test_too_many_pixels_in_one_request_is_413_before_decoding(make_client, monkeypatch):
    decodes = count_decodes(monkeypatch)
    with make_client(max_request_pixels=2 * 48 * 40) as client:
        assert upload(client, "p1", GOOD).status_code == 201
        decodes.clear()
        assert inspect(client, "p1", GOOD, OTHER).status_code == 200  # exactly the budget
        decodes.clear()
        refused = inspect(client, "p1", GOOD, OTHER, GOOD)
        assert refused.status_code == 413
        assert "3 images with 5760 pixels in all" in refused.json()["detail"]
        assert "DCPSFR_MAX_REQUEST_PIXELS" in refused.json()["detail"]
        assert decodes == []


def product_routes_answer(client: TestClient) -> None:
    assert [p["product_id"] for p in client.get("/products").json()["products"]] == ["p1", "p2"]
    shown = client.get("/products/p1")
    assert shown.status_code == 200 and shown.json()["mode"] is None  # no model: mode unknown
    # what the operator console polls: stored feedback frames and the in-memory history need no model either
    assert client.get("/products/p1/evaluation").status_code == 200
    assert client.get("/products/p1/inspections").json()["inspections"] == []
    updated = client.put("/products/p1/threshold", json={"threshold": 0.5})
    assert updated.status_code == 200 and updated.json()["threshold"] == 0.5
    assert client.delete("/products/p2").status_code == 204
    assert client.get("/products/p2").status_code == 404


@pytest.fixture
def stored_products(make_client, tmp_path):
    with make_client() as client:
        for product_id in ("p1", "p2"):
            assert upload(client, product_id, GOOD).status_code == 201
    return tmp_path / "data"


def test_product_routes_answer_while_the_model_loads(stored_products, slow_model):
    release = slow_model
    with TestClient(create_app(tiny_settings(stored_products))) as client:
        assert client.get("/readyz").status_code == 503
        wait_for(
            lambda: len(client.app.state.services.store) == 2, "both products loaded"
        )  # loaded in the background, no model
        product_routes_answer(client)
        assert inspect(client, "p1", GOOD).status_code == 503
        release.set()
        assert client.app.state.services.worker.ready_event.wait(60)
        assert client.get("/products/p1").json()["threshold"] == 0.5


def test_product_routes_answer_when_the_model_is_unavailable(stored_products, monkeypatch):
    def missing(*args, **kwargs):
        raise WeightsMissingError("weight file x is missing: run `python -m model.weights fetch tiny`")

    monkeypatch.setattr(service.app, "create_detector", missing)
    with TestClient(create_app(tiny_settings(stored_products))) as client:
        assert client.app.state.services.worker.ready_event.wait(60)
        assert client.get("/readyz").status_code == 503
        product_routes_answer(client)
        assert inspect(client, "p1", GOOD).status_code == 503
