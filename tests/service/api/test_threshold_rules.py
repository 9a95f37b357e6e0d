"""Thresholds stay reachable on their scale (docs/thresholds.md, "Reachable thresholds"), through the real app and
the FakeDetector: good frames that would put a calibrated threshold at or above the distance scale's end (2) are
refused (409, even with force=true), a frame moving the threshold in force more than x1.5 either way asks first
(409 with `confirmation`; force=true applies it), a hand-set threshold at or above the end is refused (409) and one
below every normal score is applied with a warning.

The products here have one bright reference; uniform grey frames score anywhere on the distance scale with the
FakeDetector (level 110 about 1.76, level 100 about 1.93, level 120 about 0.7), standing for "good" frames that
look nothing like the references.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from tests.helpers.apps import files, inspect, upload
from tests.helpers.images import encoded

SCALE_END = 2.0  # the distance scale's end: 1 - cosine


def level(value: float, seed: int = 0) -> bytes:
    """A 56 x 48 frame of one grey level with a little sensor noise."""
    pixels = value + np.random.default_rng(seed).normal(0, 6, (48, 56, 3))
    return encoded(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)))


REFERENCE = level(230)


def good_label(client, product_id: str, frame: bytes | None = None, inspection_id: str | None = None, **form):
    data = {"label": "good", **form}
    if inspection_id is not None:
        data["inspection_id"] = inspection_id
    extra = {"files": files(frame)} if frame is not None else {}
    return client.post(f"/products/{product_id}/feedback", data=data, **extra)


def score_of(client, product_id: str, frame: bytes) -> float:
    return inspect(client, product_id, frame).json()["results"][0]["score"]


def test_one_far_good_label_on_a_k1_product_asks_first_and_lands_on_the_scale(client):
    """The field case: one good label on a K = 1 product put the threshold at 3.5 (max + 3 std over the views and
    the frame itself); nothing could be rejected again."""
    before = upload(client, "p", REFERENCE).json()
    frame = level(110)
    score = score_of(client, "p", frame)
    assert 1.6 < score < 1.9
    asked = good_label(client, "p", frame)
    assert asked.status_code == 409, asked.text
    confirmation = asked.json()["confirmation"]
    assert confirmation["field"] == "force"
    assert confirmation["threshold"] == pytest.approx(before["threshold"])
    assert confirmation["proposed_threshold"] == pytest.approx(1.1 * score, rel=1e-4)  # the 10 % margin, no 3 std
    assert confirmation["factor"] > 1.5
    unchanged = client.get("/products/p").json()
    assert unchanged["threshold"] == before["threshold"] and unchanged["n_calibration"] == 0
    assert client.get("/products/p/evaluation").json()["n_good"] == 0, "nothing stored before the confirmation"

    forced = good_label(client, "p", frame, force="true")
    assert forced.status_code == 200, forced.text
    product = forced.json()["product"]
    assert product["threshold"] == pytest.approx(1.1 * score, rel=1e-4)
    assert product["threshold"] < SCALE_END and product["threshold_usable"] is True
    assert product["score_max"] == SCALE_END


def test_one_far_calibration_frame_asks_first_too(client):
    before = upload(client, "p", REFERENCE).json()
    frame = level(110)
    asked = client.post("/products/p/calibration", files=files(frame))
    assert asked.status_code == 409 and asked.json()["confirmation"]["field"] == "force"
    assert client.get("/products/p").json()["threshold"] == before["threshold"]
    forced = client.post("/products/p/calibration", files=files(frame), data={"force": "true"})
    assert forced.status_code == 200, forced.text
    assert forced.json()["threshold"] == pytest.approx(1.1 * score_of(client, "p", frame), rel=1e-4)


def test_frames_that_would_put_the_threshold_past_the_scale_are_refused_even_forced(client):
    before = upload(client, "p", REFERENCE).json()
    near_the_end = level(100)  # 1.1 x its score is past 2
    assert score_of(client, "p", near_the_end) * 1.1 > SCALE_END
    for answer in (
        client.post("/products/p/calibration", files=files(near_the_end), data={"force": "true"}),
        good_label(client, "p", near_the_end, force="true"),
    ):
        assert answer.status_code == 409, answer.text
        assert "at or above 2, the highest distance value: nothing can be rejected" in answer.json()["detail"]
        assert "confirmation" not in answer.json(), "no force can apply it"
    after = client.get("/products/p").json()
    assert after["threshold"] == before["threshold"] and after["n_calibration"] == 0
    assert client.get("/products/p/evaluation").json()["n_good"] == 0


def test_a_second_far_label_is_refused_where_three_std_of_two_values_would_leave_the_scale(client):
    upload(client, "p", REFERENCE)
    first = good_label(client, "p", level(110), force="true").json()["product"]
    assert first["threshold"] < SCALE_END
    second = good_label(client, "p", level(120, seed=1), force="true")  # real = [1.76, 0.7]: 3 std = 1.6
    assert second.status_code == 409 and "confirmation" not in second.json(), second.text
    assert client.get("/products/p").json()["threshold"] == first["threshold"]


def test_a_label_that_lowers_the_threshold_past_the_factor_asks_first(client):
    """A good label taken back (relabelled defect) drops the threshold by more than /1.5: confirmed first."""
    before = upload(client, "p", REFERENCE).json()
    inspection_id = inspect(client, "p", level(110)).json()["results"][0]["inspection_id"]
    raised = good_label(client, "p", inspection_id=inspection_id, force="true").json()["product"]["threshold"]
    relabel = {"label": "defect", "inspection_id": inspection_id}
    asked = client.post("/products/p/feedback", data=relabel)
    assert asked.status_code == 409, asked.text
    assert asked.json()["confirmation"]["proposed_threshold"] == pytest.approx(before["threshold"])
    assert asked.json()["confirmation"]["factor"] < 1 / 1.5
    assert client.get("/products/p").json()["threshold"] == raised
    done = client.post("/products/p/feedback", data={**relabel, "force": "true"})
    assert done.json()["product"]["threshold"] == pytest.approx(before["threshold"])


def test_with_both_thresholds_hand_set_labels_need_no_confirmation(client):
    upload(client, "p", REFERENCE)
    hand_set = {"threshold": 0.5, "pixel_threshold": 0.6}
    assert client.put("/products/p/threshold", json=hand_set).status_code == 200
    answer = good_label(client, "p", level(110))
    assert answer.status_code == 200, answer.text
    product = answer.json()["product"]
    assert product["threshold"] == 0.5 and product["calibration"]["threshold"] > 1.5  # calibrated, not in force
    assert product["pixel_threshold"] == 0.6
    assert good_label(client, "p", level(100)).status_code == 409  # the scale still holds


@pytest.mark.parametrize("route", ["feedback", "calibration"])
def test_a_hand_set_image_threshold_leaves_the_calibrated_pixel_threshold_asking_first(client, route):
    """With only the image threshold set by hand, the pixel threshold in force is the calibrated one: it draws the
    regions and, with acceptance rules, decides the verdict, so good frames moving it past the factor ask first."""
    upload(client, "p", REFERENCE)
    assert client.put("/products/p/threshold", json={"threshold": 0.5}).status_code == 200
    assert client.put("/products/p/rules", json={"max_regions": 0}).status_code == 200
    before = client.get("/products/p").json()
    frame = level(110)

    def send(**form):
        if route == "feedback":
            return good_label(client, "p", frame, **form)
        return client.post("/products/p/calibration", files=files(frame), data=form)

    asked = send()
    assert asked.status_code == 409, asked.text
    confirmation = asked.json()["confirmation"]
    assert confirmation["pixel_threshold"] == pytest.approx(before["pixel_threshold"])
    assert confirmation["factor"] > 1.5 and "threshold" not in confirmation
    assert "pixel threshold" in asked.json()["detail"]
    assert client.get("/products/p").json()["pixel_threshold"] == before["pixel_threshold"]  # nothing changed
    forced = send(force="true")
    assert forced.status_code == 200, forced.text
    assert client.get("/products/p").json()["pixel_threshold"] == pytest.approx(
        confirmation["proposed_pixel_threshold"]
    )


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"threshold": 3.51}, "threshold 3.51 is at or above 2"),
        ({"threshold": 2.0}, "threshold 2 is at or above 2"),
        ({"threshold": 0.5, "pixel_threshold": 2.5}, "pixel threshold 2.5 is at or above 2"),
    ],
)
def test_a_hand_set_threshold_at_or_above_the_scale_is_refused(client, body, says):
    before = upload(client, "p", REFERENCE).json()
    answer = client.put("/products/p/threshold", json=body)
    assert answer.status_code == 409, answer.text
    assert says in answer.json()["detail"]
    after = client.get("/products/p").json()
    assert after["threshold"] == before["threshold"] and after["threshold_source"] == "calibrated"


@pytest.mark.parametrize("threshold", [-0.5, 0.0])
def test_a_hand_set_threshold_below_every_normal_score_is_applied_with_a_warning(client, threshold):
    upload(client, "p", REFERENCE)
    answer = client.put("/products/p/threshold", json={"threshold": threshold})
    assert answer.status_code == 200, answer.text
    product = answer.json()
    assert product["threshold"] == threshold and product["threshold_usable"] is False
    warning = product["warnings"][0]
    assert warning.startswith(f"unusable threshold: threshold {threshold:g} is below every normal score")
    assert "every good part is rejected" in warning
    assert client.get("/products").json()["products"][0]["warnings"][0] == warning
    assert inspect(client, "p", REFERENCE).json()["results"][0]["anomalous"] is True


@pytest.mark.parametrize("stored_threshold", [3.51, 2.0])
def test_a_product_stored_with_an_unreachable_threshold_says_so(client, stored_threshold):
    """A product calibrated before these rules (threshold 3.51 on the distance scale) is flagged wherever it is
    shown; a new calibration frame recalibrates it with today's rule."""
    upload(client, "p", REFERENCE)
    store = client.app.state.services.store
    product = store.get("p")
    store.commit("p", product.refs, replace(product.calibration, threshold=stored_threshold))
    summary = client.get("/products/p").json()
    assert summary["threshold"] == stored_threshold and summary["threshold_usable"] is False
    assert summary["warnings"][0].startswith(
        f"unusable threshold: threshold {stored_threshold:g} is at or above 2, the highest distance value"
    )
    recalibrated = client.post("/products/p/calibration", files=files(REFERENCE), data={"force": "true"}).json()
    assert recalibrated["threshold"] < 0.1 and recalibrated["threshold_usable"] is True
    assert not any(w.startswith("unusable") for w in recalibrated["warnings"])
