"""The review queue over HTTP (the fake detector), on SQLite and PostgreSQL: the per-product review policy (validated,
audited), the queue oldest first in cursor pages with its count, the verdict given as feedback by inspection id
(who and when on the record, the item gone, a good frame in the calibration set), on two replicas."""

from __future__ import annotations

import pytest

from tests.helpers.apps import files, inspect_part, upload
from tests.helpers.images import image_bytes

GOOD = [image_bytes(56, 48, seed=s) for s in range(6)]
DEFECT = image_bytes(56, 48, seed=9, defect=True)
EVERY_OK = {"band": 1.0, "all_ng": False}  # ±100 %: every distance score from 0 to twice the threshold


def queue(client, **params) -> dict:
    answer = client.get("/inspections/review-queue", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_the_review_policy_is_set_per_product_validated_and_audited(replicas):
    with replicas() as client:
        upload(client, "p", *GOOD[:2])
        default = {"product_id": "p", "default": True, "band": 0.1, "all_ng": False}
        assert client.get("/products/p/review-policy").json() == default
        put = client.put("/products/p/review-policy", json={"band": 0.25, "all_ng": True})
        assert put.status_code == 200 and put.json() == {
            "product_id": "p",
            "default": False,
            "band": 0.25,
            "all_ng": True,
        }
        assert client.get("/products/p/review-policy").json()["band"] == 0.25
        assert client.put("/products/p/review-policy", json={"band": 0, "all_ng": False}).json()["band"] == 0.0
        for bad in ({"band": -0.01}, {"band": 1.01}, {"band": "0.1"}, {"band": True}, {"all_ng": 1}, {"all_ng": "yes"},
                    {"extra": 1}):  # fmt: skip
            body = {"band": 0.1, "all_ng": False, **bad}
            assert client.put("/products/p/review-policy", json=body).status_code == 422, bad
        assert client.put("/products/p/review-policy", json={"band": 0.1}).status_code == 422
        assert client.put("/products/nope/review-policy", json={"band": 0.1, "all_ng": False}).status_code == 404
        assert client.get("/products/nope/review-policy").status_code == 404
        rows = client.get("/audit", params={"action": "review_policy.set"}).json()["entries"]
        assert [r["after"] for r in rows] == [
            {"band": 0.0, "all_ng": False, "default": False},
            {"band": 0.25, "all_ng": True, "default": False},
        ]
        assert rows[-1]["before"] == {"band": 0.1, "all_ng": False, "default": True}


def test_a_product_without_a_policy_follows_the_settings(replicas):
    with replicas(review_band=0.0, review_all_ng=True) as client:
        upload(client, "p", *GOOD[:2])
        assert client.get("/products/p/review-policy").json() == {
            "product_id": "p", "default": True, "band": 0.0, "all_ng": True,
        }  # fmt: skip
        ok, ng = inspect_part(client, "p", GOOD[2]), inspect_part(client, "p", DEFECT)
        assert not ok["anomalous"] and ng["anomalous"]
        assert [i["inspection_id"] for i in queue(client)["items"]] == [ng["inspection_id"]]


def test_borderline_inspections_wait_oldest_first_in_cursor_pages(replicas):
    with replicas() as client:
        upload(client, "p", *GOOD[:2])
        upload(client, "q", *GOOD[:2])
        client.put("/products/p/review-policy", json=EVERY_OK)
        client.put("/products/p/retention", json={"keep_ng": False, "keep_ok_every": 0, "days": 7})
        client.put("/products/q/review-policy", json={"band": 0.0, "all_ng": False})
        waiting = [inspect_part(client, "p", frame, part_id=f"SN-{n}") for n, frame in enumerate(GOOD[2:5])]
        waiting.append(inspect_part(client, "p", DEFECT, part_id="SN-3"))  # NG, within twice the threshold
        assert [r["anomalous"] for r in waiting] == [False, False, False, True]
        ok, ng = inspect_part(client, "q", GOOD[2]), inspect_part(client, "q", DEFECT)  # q: no band, no NG
        page = queue(client)
        assert [i["inspection_id"] for i in page["items"]] == [r["inspection_id"] for r in waiting]
        assert page["pending"] == 4 and page["next_cursor"] is None
        item = page["items"][0]
        assert item["part_id"] == "SN-0" and item["product_id"] == "p" and item["verdict"] == "OK"
        assert item["score"] == waiting[0]["score"] and item["threshold"] == waiting[0]["threshold"]
        assert item["thumbnail"].startswith("data:image/jpeg;base64,")
        assert all(i["frame_kept"] for i in page["items"]), "kept for the reviewer although the retention keeps none"
        assert client.get(f"/inspections/{waiting[0]['inspection_id']}").json()["review"] == "pending"
        assert [client.get(f"/inspections/{r['inspection_id']}").json()["review"] for r in (ok, ng)] == [None, None]
        first = queue(client, limit=3)
        second = queue(client, limit=3, cursor=first["next_cursor"])
        assert [i["part_id"] for i in first["items"] + second["items"]] == ["SN-0", "SN-1", "SN-2", "SN-3"]
        assert second["next_cursor"] is None and first["pending"] == second["pending"] == 4
        assert queue(client, product_id="q") == {"pending": 0, "items": [], "next_cursor": None}
        client.put("/products/q/review-policy", json={"band": 0.0, "all_ng": True})
        later = inspect_part(client, "q", DEFECT)
        assert [i["inspection_id"] for i in queue(client, product_id="q")["items"]] == [later["inspection_id"]]
        assert client.get(f"/inspections/{ng['inspection_id']}").json()["review"] is None, "decided when recorded"
        assert client.get("/inspections/review-queue", params={"cursor": "nonsense"}).status_code == 422
        assert client.get("/inspections/review-queue", params={"limit": 0}).status_code == 422


def test_a_manual_threshold_near_a_score_sends_it_to_the_queue(replicas):
    with replicas() as client:
        upload(client, "p", *GOOD[:2])
        score = inspect_part(client, "p", GOOD[2])["score"]
        assert queue(client)["pending"] == 0
        assert client.put("/products/p/threshold", json={"threshold": score * 1.05}).status_code == 200
        borderline = inspect_part(client, "p", GOOD[2])
        assert borderline["threshold"] == pytest.approx(score * 1.05)
        assert [i["inspection_id"] for i in queue(client)["items"]] == [borderline["inspection_id"]]
        assert client.put("/products/p/threshold", json={"threshold": score * 0.95}).status_code == 200
        assert inspect_part(client, "p", GOOD[2])["anomalous"] is True  # NG by 5 %: queued too
        assert queue(client)["pending"] == 2


def test_the_verdict_is_feedback_on_any_replica_recorded_with_who_and_when(replicas):
    with replicas() as first, replicas() as second:
        upload(first, "p", *GOOD[:2])
        first.put("/products/p/review-policy", json=EVERY_OK)
        waiting = [inspect_part(first, "p", frame) for frame in GOOD[2:4]]
        queue(first)  # the first replica's spool is written (a read flushes it)
        assert [i["inspection_id"] for i in queue(second)["items"]] == [r["inspection_id"] for r in waiting]
        n_good = second.get("/products/p/evaluation").json()["n_good"]
        good = second.post(
            "/products/p/feedback",
            data={"label": "good", "inspection_id": waiting[0]["inspection_id"], "force": "true"},
        )
        assert good.status_code == 200, good.text
        assert second.get("/products/p/evaluation").json()["n_good"] == n_good + 1  # in the calibration set
        defect = first.post(
            "/products/p/feedback", data={"label": "defect", "inspection_id": waiting[1]["inspection_id"]}
        )
        assert defect.status_code == 200, defect.text
        assert queue(first) == {"pending": 0, "items": [], "next_cursor": None}
        record = first.get(f"/inspections/{waiting[0]['inspection_id']}").json()
        assert record["review"] == "reviewed" and record["label"] == "good"
        assert record["reviewed_by"] == "anonymous" and record["reviewed_at"] >= record["time"]
        # a feedback with an uploaded frame touches no record, and a review of a record never queued queues nothing
        assert second.post("/products/p/feedback", data={"label": "defect"}, files=files(DEFECT)).status_code == 200
        assert queue(second)["pending"] == 0
