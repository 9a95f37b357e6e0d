"""The model worker: concurrent requests are batched and grouped by product; a full queue answers 429."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from tests.helpers.apps import ForwardGate, in_background, inspect, tiny_settings, upload
from tests.helpers.images import image_bytes
from tests.helpers.waiting import wait_for

GOOD = image_bytes(48, 40, seed=0)
OTHER = image_bytes(48, 40, seed=1)
DEFECT = image_bytes(48, 40, seed=2, defect=True)


def test_waiting_requests_are_batched_and_grouped_by_product(make_client):
    with make_client(max_batch_size=8, max_wait_ms=50) as client:
        upload(client, "p1", GOOD)
        upload(client, "p2", OTHER)
        alone = {
            "p1": inspect(client, "p1", DEFECT).json()["results"][0]["score"],
            "p2": inspect(client, "p2", DEFECT).json()["results"][0]["score"],
        }
        worker = client.app.state.services.worker
        with ForwardGate(worker) as gate:
            first, _ = in_background(inspect, client, "p1", GOOD)
            assert gate.entered.wait(30)  # the worker is busy with the first request
            waiting = [in_background(inspect, client, product, DEFECT) for product in ("p1", "p2", "p1")]
            wait_for(lambda: worker.queue.qsize() == 3, "three queued requests")
            gate.release.set()
            for thread, _ in waiting:
                thread.join(30)
            first.join(30)
        assert gate.batch_sizes[0] == 1  # the first request alone, then one forward per product:
        assert sorted(gate.batch_sizes[1:]) == [1, 2]  # p1's two waiting requests together, p2's apart
        for (_, answers), product in zip(waiting, ("p1", "p2", "p1"), strict=True):
            result = answers[0].json()["results"][0]
            assert result["score"] == pytest.approx(alone[product], rel=1e-4)  # never mixed with the other product


def test_full_queue_answers_429_with_retry_after(make_client):
    with make_client(queue_size=1) as client:
        upload(client, "p1", GOOD)
        worker = client.app.state.services.worker
        with ForwardGate(worker) as gate:
            busy, busy_answers = in_background(inspect, client, "p1", GOOD)
            assert gate.entered.wait(30)
            queued, queued_answers = in_background(inspect, client, "p1", GOOD)
            wait_for(lambda: worker.queue.qsize() == 1, "one queued request")
            refused = inspect(client, "p1", GOOD)
            assert refused.status_code == 429
            assert int(refused.headers["Retry-After"]) >= 1
            assert "queue is full" in refused.json()["detail"]
            gate.release.set()
            busy.join(30)
            queued.join(30)
        assert busy_answers[0].status_code == queued_answers[0].status_code == 200


def test_a_request_larger_than_the_batch_is_split(make_client):
    with make_client(max_batch_size=2) as client:
        upload(client, "p1", GOOD)
        worker = client.app.state.services.worker
        with ForwardGate(worker) as gate:
            gate.release.set()
            answer = inspect(client, "p1", GOOD, OTHER, DEFECT, GOOD, DEFECT)
        assert answer.status_code == 200
        assert gate.batch_sizes == [2, 2, 1]
        scores = [r["score"] for r in answer.json()["results"]]
        assert scores[0] == pytest.approx(scores[3], rel=1e-4)
        assert scores[2] == pytest.approx(scores[4], rel=1e-4)


def test_a_frame_that_fails_fails_only_its_own_request_and_is_logged_once(tmp_path, caplog):
    """A batch's error fails only the request whose frame caused it, logged once with its traceback."""
    bad_frame = image_bytes(7, 40, seed=3)
    app = create_app(tiny_settings(tmp_path / "data", max_batch_size=8, max_wait_ms=50))
    with TestClient(app, raise_server_exceptions=False) as client:  # the 500 as a client gets it
        assert client.app.state.services.worker.ready_event.wait(60)
        upload(client, "p1", GOOD)
        worker = client.app.state.services.worker
        real_forward = worker.detector.forward

        def forward_failing_on_7_px_wide_frames(batch, refs):
            if any(frame.camera_size[0] == 7 for frame in batch.frames):
                raise RuntimeError("cannot predict a 7 px wide frame")
            return real_forward(batch, refs)

        with ForwardGate(worker) as gate:
            gate._original = forward_failing_on_7_px_wide_frames
            first, _ = in_background(inspect, client, "p1", GOOD)
            assert gate.entered.wait(30)  # the worker is busy: the next three wait in the queue, then batch
            waiting = [in_background(inspect, client, "p1", frame) for frame in (GOOD, bad_frame, DEFECT)]
            wait_for(lambda: worker.queue.qsize() == 3, "three queued requests")
            gate.release.set()
            for thread, _ in [*waiting, (first, None)]:
                thread.join(30)
        assert gate.batch_sizes[1] == 3  # the three together first, then each request on its own
        statuses = [answers[0].status_code for _, answers in waiting]
        assert statuses == [200, 500, 200]
        assert waiting[1][1][0].json()["detail"] == "internal error (RuntimeError); see the service log"
        tracebacks = [r for r in caplog.records if r.exc_info]
        assert [r.getMessage() for r in tracebacks] == ["unexpected error on POST /inspect"]
