"""Calibration set, operator feedback, evaluation and the recent-inspections ring, through the real app (tiny
detector, random weights: these tests show behaviour, never accuracy)."""

from __future__ import annotations

import asyncio
import base64
import io
import threading

import pytest
from PIL import Image

from service.decisions.thresholds import CalibrationPolicy, apply_rule
from tests.helpers.apps import files, inspect, upload
from tests.helpers.images import image_bytes
from tests.helpers.waiting import wait_for

GOOD = [image_bytes(56, 48, seed=s) for s in range(4)]
DEFECT = image_bytes(56, 48, seed=9, defect=True)
SETTINGS = {"calibration_min_frames": 3, "target_false_alarm_rate": 0.1}


def add_calibration(client, product_id, *payloads, **form):
    return client.post(f"/products/{product_id}/calibration", files=files(*payloads), data=form)


def feedback(client, product_id, label, inspection_id=None, image=None, **form):
    data = {"label": label, **form}
    if inspection_id is not None:
        data["inspection_id"] = inspection_id
    extra = {"files": [("images", ("frame.png", image, "image/png"))]} if image is not None else {}
    return client.post(f"/products/{product_id}/feedback", data=data, **extra)


def expected_threshold(calibration: dict, policy: CalibrationPolicy) -> float:
    loo = calibration["method"] == "leave-one-out"
    real = (calibration["normal_scores"] if loo else []) + calibration["frame_scores"]
    views = calibration["view_scores"] + ([] if loo else calibration["normal_scores"])
    return apply_rule(real, views, calibration["score_scale"], policy).threshold


def test_upload_with_calibration_frames_reports_the_method_and_counts(make_client):
    with make_client(**SETTINGS) as client:
        summary = client.post(
            "/products/p/references",
            files=files(*GOOD[:2]) + files(GOOD[2], GOOD[3], name="calibration"),
        ).json()
        assert summary["score_scale"] == "distance"
        assert summary["n_calibration"] == 4  # 2 leave-one-out + 2 calibration frames
        assert summary["n_pixel_calibration"] == 4
        assert summary["threshold_method"] == "max-margin" and summary["provisional"] is False
        policy = CalibrationPolicy(0.1, 3)
        assert summary["threshold"] == pytest.approx(expected_threshold(summary["calibration"], policy))
        alone = upload(client, "q", GOOD[0]).json()
        assert alone["provisional"] is True and alone["n_calibration"] == 0
        assert any("provisional" in w for w in alone["warnings"])


def test_same_image_twice_warns_and_a_reshot_is_not_flagged(client):
    summary = upload(client, "twin", GOOD[0], GOOD[0]).json()
    assert summary["threshold"] > 1e-3
    assert any("near-duplicate" in w for w in summary["warnings"])
    reshot = image_bytes(56, 48, seed=17)  # the same texture, new sensor noise
    assert inspect(client, "twin", reshot).json()["results"][0]["anomalous"] is False


def test_calibration_frames_recompute_the_threshold_without_refitting(make_client):
    with make_client(**SETTINGS) as client:
        before = upload(client, "p", *GOOD[:2]).json()
        # any frame the operator calls good; this one moves the threshold far, which is confirmed first
        assert add_calibration(client, "p", DEFECT, GOOD[2]).status_code == 409
        response = add_calibration(client, "p", DEFECT, GOOD[2], force="true")
        assert response.status_code == 200, response.text
        after = response.json()
        assert after["version"] == before["version"] and after["n_references"] == 2
        assert after["n_calibration"] == before["n_calibration"] + 2
        assert after["calibration"]["normal_scores"] == before["calibration"]["normal_scores"]
        assert after["threshold"] == pytest.approx(expected_threshold(after["calibration"], CalibrationPolicy(0.1, 3)))
        assert after["threshold"] > max(after["calibration"]["frame_scores"])
        assert client.get("/products/p").json()["threshold"] == after["threshold"]
    with make_client(**SETTINGS) as client:  # persisted: a restart loads the recomputed thresholds
        assert client.get("/products/p").json()["threshold"] == after["threshold"]
        assert client.get("/products/p").json()["n_calibration"] == after["n_calibration"]


def test_recent_inspections_have_ids_and_thumbnails_newest_first(make_client):
    with make_client(**SETTINGS) as client:
        upload(client, "p", *GOOD[:2])
        big = image_bytes(400, 300, seed=1)
        ids = []
        for payload in (GOOD[2], DEFECT, big, GOOD[3]):
            result = inspect(client, "p", payload).json()["results"][0]
            assert result["score_scale"] == "distance"
            ids.append(result["inspection_id"])
        assert len(set(ids)) == 4
        listed = client.get("/products/p/inspections", params={"limit": 3}).json()
        assert listed["product_id"] == "p"
        entries = listed["inspections"]
        assert [e["inspection_id"] for e in entries] == ids[::-1][:3]  # newest first, at most `limit`
        assert entries[1]["width"] == 400 and entries[1]["label"] is None
        header, payload = entries[1]["thumbnail"].split(",", 1)
        assert header == "data:image/jpeg;base64"
        assert max(Image.open(io.BytesIO(base64.b64decode(payload))).size) == 160
        assert len(client.get("/products/p/inspections", params={"limit": 1}).json()["inspections"]) == 1
        assert client.get("/products/nope/inspections").status_code == 404


def test_feedback_changes_calibration_and_evaluation(make_client):
    with make_client(**SETTINGS) as client:
        upload(client, "p", *GOOD[:2])
        empty = client.get("/products/p/evaluation").json()
        assert empty["n_good"] == 0 and empty["i_auroc"] is None and empty["f1"] is None
        flagged = inspect(client, "p", DEFECT).json()["results"][0]
        assert flagged["anomalous"], "the painted square should score above the threshold"
        # the operator says it was fine: a false alarm, far above the threshold, so the move is confirmed first
        asked = feedback(client, "p", "good", inspection_id=flagged["inspection_id"])
        assert asked.status_code == 409 and asked.json()["confirmation"]["field"] == "force"
        assert client.get("/products/p/evaluation").json()["n_good"] == 0, "nothing is stored before confirming"
        response = feedback(client, "p", "good", inspection_id=flagged["inspection_id"], force="true")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["product"]["n_calibration"] == 3
        assert body["product"]["threshold"] > flagged["score"] > flagged["threshold"]
        evaluation = body["evaluation"]
        assert (evaluation["n_good"], evaluation["n_defect"], evaluation["false_alarms"]) == (1, 0, 0)
        assert evaluation["samples"][0]["inspection_id"] == flagged["inspection_id"]
        ring = client.get("/products/p/inspections").json()["inspections"]
        assert ring[0]["label"] == "good"
        # a defect the model misses at the new threshold, and a good frame: both classes now
        body = feedback(client, "p", "defect", image=image_bytes(56, 48, seed=3)).json()
        evaluation = client.get("/products/p/evaluation").json()
        assert evaluation == body["evaluation"]
        assert (evaluation["n_good"], evaluation["n_defect"]) == (1, 1)
        assert evaluation["misses"] == 1 and evaluation["f1"] == 0.0
        assert evaluation["i_auroc"] is not None and 0.0 <= evaluation["i_auroc"] <= 1.0
        assert body["product"]["n_calibration"] == 3, "a defect never joins the calibration set"
    with make_client(**SETTINGS) as client:  # labelled frames persist with the product
        assert client.get("/products/p/evaluation").json()["n_defect"] == 1


def test_feedback_can_add_a_reference_as_a_new_version(client):
    first = upload(client, "p", GOOD[0]).json()
    body = feedback(client, "p", "good", image=GOOD[1], add_to_references="true").json()
    product = body["product"]
    assert product["version"] == first["version"] + 1 and product["n_references"] == 2
    assert product["calibration"]["method"] == "leave-one-out"
    assert product["n_calibration"] == 3  # 2 references left out in turn + the frame itself
    assert body["evaluation"]["n_good"] == 1 and body["evaluation"]["reference_version"] == product["version"]


def test_feedback_errors_are_clear(client):
    upload(client, "p", GOOD[0])
    assert feedback(client, "p", "good").status_code == 422  # neither id nor image
    both = feedback(client, "p", "good", inspection_id="x", image=GOOD[1])
    assert both.status_code == 422
    assert feedback(client, "p", "maybe", image=GOOD[1]).status_code == 422
    assert feedback(client, "p", "defect", image=GOOD[1], add_to_references="true").status_code == 422
    missing = feedback(client, "p", "good", inspection_id="0" * 32)
    assert missing.status_code == 404 and "send the frame" in missing.json()["detail"]
    assert feedback(client, "nope", "good", image=GOOD[1]).status_code == 404
    assert add_calibration(client, "nope", GOOD[1]).status_code == 404
    assert feedback(client, "p", "good", image=b"not an image").status_code == 415


def test_a_relabelled_inspection_keeps_only_its_latest_label(make_client):
    """An operator correcting a label: the latest replaces the earlier one (both counting would let a frame
    labelled good twice join the calibration set twice)."""
    with make_client(**SETTINGS) as client:
        upload(client, "p", GOOD[0], GOOD[1])
        before = client.get("/products/p").json()
        inspection_id = inspect(client, "p", DEFECT).json()["results"][0]["inspection_id"]
        for _ in range(2):  # a defect labelled good moves the threshold far: confirmed (force) each time
            body = feedback(client, "p", "good", inspection_id=inspection_id, force="true").json()
        assert (body["evaluation"]["n_good"], body["evaluation"]["n_defect"]) == (1, 0)
        assert body["product"]["n_calibration"] == before["n_calibration"] + 1
        body = feedback(client, "p", "defect", inspection_id=inspection_id, force="true").json()
        assert (body["evaluation"]["n_good"], body["evaluation"]["n_defect"]) == (0, 1)
        assert body["product"]["n_calibration"] == before["n_calibration"]  # it left the calibration set
        assert body["product"]["threshold"] == pytest.approx(before["threshold"])
        assert client.get("/products/p/inspections").json()["inspections"][0]["label"] == "defect"


def test_references_added_by_feedback_at_once_stop_at_the_maximum(make_client, monkeypatch):
    """Two requests both passed the check before either had added its reference: the product went past
    DCPSFR_MAX_REFERENCES. The check is repeated under the product's lock."""
    from service.products.workflows import Workflows

    first_inside, release = threading.Event(), threading.Event()
    real_add_reference = Workflows._add_reference

    async def add_reference_held(*args):
        if not first_inside.is_set():
            first_inside.set()
            await asyncio.to_thread(release.wait, 30)
        return await real_add_reference(*args)

    monkeypatch.setattr(Workflows, "_add_reference", add_reference_held)
    with make_client(max_references=2) as client:
        upload(client, "p", GOOD[0])
        answers: list = []

        def add(frame):
            answers.append(feedback(client, "p", "good", image=frame, add_to_references="true"))

        first = threading.Thread(target=add, args=(GOOD[1],))
        first.start()
        assert first_inside.wait(30)
        second = threading.Thread(target=add, args=(GOOD[2],))
        second.start()
        lock = client.app.state.services.workflows.frames.lock("p")
        # the second has passed the first check and waits for the product's lock
        wait_for(lambda: lock._waiters or not second.is_alive(), "the second label to wait for the lock")
        assert second.is_alive()
        release.set()
        first.join(30)
        second.join(30)
        assert sorted(answer.status_code for answer in answers) == [200, 409]
        assert client.get("/products/p").json()["n_references"] == 2


@pytest.mark.parametrize("damage", ["changed", "missing"])
def test_a_damaged_labelled_frame_file_is_dropped_at_the_next_refit_and_the_rest_kept(make_client, caplog, damage):
    """A labelled frame's blob whose bytes no longer match its sha256 (or that is gone) is never decoded: the next
    refit drops that frame (logged) and keeps the others."""
    with make_client(**SETTINGS) as client:
        upload(client, "p", GOOD[0], GOOD[1])
        assert feedback(client, "p", "defect", image=DEFECT).status_code == 200
        assert feedback(client, "p", "good", image=GOOD[2], force="true").status_code == 200
        frames = client.app.state.services.workflows.frames
        broken = next(f for f in frames.frames("p") if f.label == "defect")
        path = frames.store.blobs.path(broken.sha256)
        path.write_bytes(b"not the frame") if damage == "changed" else path.unlink()
        assert upload(client, "p", GOOD[0], GOOD[3]).status_code == 201
        dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
        assert len(dropped) == 1 and broken.frame_id in dropped[0]
        assert [f.label for f in frames.frames("p")] == ["good"]
        evaluation = client.get("/products/p/evaluation").json()
        assert (evaluation["n_defect"], evaluation["n_good"]) == (0, 1)


def reencoded(payload: bytes, fmt: str) -> bytes:
    """The same pixels in another file format (other bytes)."""
    out = io.BytesIO()
    Image.open(io.BytesIO(payload)).save(out, format=fmt)
    return out.getvalue()


def test_the_same_frame_sent_ten_times_counts_once(make_client):
    with make_client(**{**SETTINGS, "calibration_min_frames": 10}) as client:
        before = upload(client, "p", *GOOD[:2]).json()
        answer = add_calibration(client, "p", *[GOOD[2]] * 10, force="true")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["n_calibration"] == before["n_calibration"] + 1
        assert body["provisional"] is True, "one real frame is not ten"
        assert body["duplicates_ignored"] == 9
        assert "9 duplicate frames were ignored" in " ".join(body["warnings"])
        assert not any("duplicate" in w for w in client.get("/products/p").json()["warnings"])  # the answer's only


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "BMP"])
def test_a_frame_already_in_the_calibration_set_counts_once_even_re_encoded(make_client, fmt):
    with make_client(**SETTINGS) as client:
        upload(client, "p", *GOOD[:2])
        first = add_calibration(client, "p", GOOD[2], force="true").json()
        assert first["duplicates_ignored"] == 0
        again = add_calibration(client, "p", reencoded(GOOD[2], fmt), GOOD[3], force="true").json()
        assert again["n_calibration"] == first["n_calibration"] + 1  # only GOOD[3] joined
        assert again["duplicates_ignored"] == 1 and "1 duplicate frame was ignored" in " ".join(again["warnings"])
        only_copies = add_calibration(client, "p", reencoded(GOOD[3], fmt))
        assert only_copies.status_code == 200 and only_copies.json()["n_calibration"] == again["n_calibration"]
        assert client.get("/products/p/evaluation").json()["n_good"] == 0  # calibration frames are no feedback


def test_the_same_frame_labelled_good_twice_counts_once_and_a_new_label_replaces_it(make_client):
    with make_client(**SETTINGS) as client:
        before = upload(client, "p", *GOOD[:2]).json()
        first = feedback(client, "p", "good", image=GOOD[2], force="true").json()
        assert first["duplicates_ignored"] == 0
        assert first["product"]["n_calibration"] == before["n_calibration"] + 1
        again = feedback(client, "p", "good", image=reencoded(GOOD[2], "TIFF"), force="true").json()
        assert (
            again["duplicates_ignored"] == 1 and again["product"]["n_calibration"] == first["product"]["n_calibration"]
        )
        assert again["evaluation"]["n_good"] == 1
        corrected = feedback(client, "p", "defect", image=GOOD[2], force="true").json()
        assert corrected["duplicates_ignored"] == 0
        assert corrected["product"]["n_calibration"] == before["n_calibration"]  # it left the calibration set
        assert (corrected["evaluation"]["n_good"], corrected["evaluation"]["n_defect"]) == (0, 1)
