"""Named keys with roles (operator < engineer < admin) on each route family, and the audit log of every change:
who, what, before and after, read through GET /audit (filters, cursor pages, JSON lines), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import logging

import pytest

from service.keys import LEGACY_WARNING, key_hash
from tests.helpers.apps import files, upload
from tests.helpers.images import image_bytes

GOOD = [image_bytes(56, 48, seed=s) for s in range(3)]
OPERATOR, ENGINEER, ADMIN = ({"X-API-Key": f"{role}-key"} for role in ("operator", "engineer", "admin"))


@pytest.fixture(params=["sqlite", "postgresql"])
def keyed_client(request, make_client, tmp_path):
    """An app with one key of each role (anna: operator, ben: engineer, cleo: admin), on each database."""
    path = tmp_path / "keys.yaml"
    entries = [("anna", "operator"), ("ben", "engineer"), ("cleo", "admin")]
    path.write_text("".join(f"- {{name: {n}, role: {r}, sha256: '{key_hash(r + '-key')}'}}\n" for n, r in entries))
    settings = {"keys_file": path, "records_flush_s": 60.0}
    if request.param == "postgresql":
        settings["database_url"] = request.getfixturevalue("postgres_server").new_database("roles_test")
    with make_client(**settings) as client:
        yield client


def audit_rows(client, **params) -> list[dict]:
    answer = client.get("/audit", params=params, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    return answer.json()["entries"]


def test_each_role_may_do_its_own_routes_and_a_lower_one_gets_403_naming_the_role(keyed_client):
    client = keyed_client
    assert upload(client, "p", *GOOD, headers=OPERATOR).status_code == 403
    refused = client.put("/products/p/threshold", json={"threshold": 0.5}, headers=OPERATOR)
    assert refused.status_code == 403
    assert refused.json()["detail"] == "the engineer role is needed (key 'anna' has the operator role)"
    assert upload(client, "p", *GOOD, headers=ENGINEER).status_code == 201
    assert client.put("/products/p/threshold", json={"threshold": 0.5}, headers=ENGINEER).status_code == 200
    assert client.put("/products/p/rules", json={"max_regions": 3}, headers=OPERATOR).status_code == 403
    assert client.put("/products/p/rules", json={"max_regions": 3}, headers=ENGINEER).status_code == 200
    retention = {"keep_ng": True, "keep_ok_every": 0, "days": 3}
    assert client.put("/products/p/retention", json=retention, headers=OPERATOR).status_code == 403
    assert client.put("/products/p/retention", json=retention, headers=ENGINEER).status_code == 200
    inspected = client.post("/inspect", data={"product_id": "p"}, files=files(GOOD[0]), headers=OPERATOR)
    assert inspected.status_code == 200
    assert client.get("/products/p", headers=OPERATOR).status_code == 200
    assert client.get("/inspections", headers=OPERATOR).status_code == 200
    assert client.get("/reports/yield", headers=OPERATOR).status_code == 200
    assert client.get("/reports/pareto", headers=OPERATOR).status_code == 200
    for key in (OPERATOR, ENGINEER):
        audit = client.get("/audit", headers=key)
        assert audit.status_code == 403 and "the admin role is needed" in audit.json()["detail"]
        delete = client.delete("/products/p", headers=key)
        assert delete.status_code == 403 and "the admin role is needed" in delete.json()["detail"]
    assert client.get("/audit", headers=ADMIN).status_code == 200
    assert client.delete("/products/p", headers=ADMIN).status_code == 204


def test_every_change_is_on_the_audit_log_with_who_before_and_after(keyed_client):
    client = keyed_client
    assert upload(client, "p", *GOOD[:2], headers=ENGINEER).status_code == 201
    version = client.get("/products/p", headers=OPERATOR).json()["version"]
    assert client.post("/products/p/calibration", files=files(GOOD[2]), headers=ENGINEER).status_code == 200
    assert client.put("/products/p/threshold", json={"threshold": 0.75}, headers=ENGINEER).status_code == 200
    assert client.put("/products/p/rules", json={"max_regions": 3}, headers=ENGINEER).status_code == 200
    assert client.delete("/products/p/rules", headers=ENGINEER).status_code == 200
    retention = {"keep_ng": False, "keep_ok_every": 5, "days": 3}
    assert client.put("/products/p/retention", json=retention, headers=ENGINEER).status_code == 200
    inspection = client.post("/inspect", data={"product_id": "p"}, files=files(GOOD[0]), headers=OPERATOR).json()
    inspection_id = inspection["results"][0]["inspection_id"]
    feedback = {"label": "defect", "inspection_id": inspection_id}
    assert client.post("/products/p/feedback", data=feedback, headers=OPERATOR).status_code == 200
    assert client.delete("/products/p", headers=ADMIN).status_code == 204

    rows = {row["action"]: row for row in audit_rows(client)}
    actions = [row["action"] for row in audit_rows(client)]
    assert actions == [  # newest first
        "product.delete", "feedback", "retention.set", "rules.delete", "rules.set", "threshold.set",
        "calibration.add", "references.upload",
    ]  # fmt: skip
    upload_row = rows["references.upload"]
    assert upload_row["actor"] == "ben" and upload_row["product_id"] == "p" and upload_row["before"] is None
    assert upload_row["after"]["version"] == version and upload_row["after"]["images"] == 2
    assert rows["calibration.add"]["after"]["frames"] == 1
    threshold = rows["threshold.set"]
    assert threshold["before"]["manual_threshold"] is None and threshold["after"]["manual_threshold"] == 0.75
    assert threshold["after"]["threshold"] == 0.75
    assert rows["rules.set"]["before"] == {"rules": None, "rules_version": 0}
    assert rows["rules.set"]["after"]["rules"]["max_regions"] == 3 and rows["rules.set"]["after"]["rules_version"] == 1
    assert rows["rules.delete"]["after"] == {"rules": None, "rules_version": 2}
    assert rows["retention.set"]["before"]["default"] is True
    assert rows["retention.set"]["after"] == {**retention, "default": False}
    assert rows["feedback"]["actor"] == "anna"
    assert (
        rows["feedback"]["after"]["label"] == "defect" and rows["feedback"]["after"]["inspection_id"] == inspection_id
    )
    deleted = rows["product.delete"]
    assert deleted["actor"] == "cleo" and deleted["before"]["version"] == version and deleted["after"] is None
    assert "images" not in json.dumps(rows["feedback"])  # small values only, never a frame


def test_the_review_queue_is_an_operators_and_its_policy_an_engineers_and_the_reviewer_is_recorded(keyed_client):
    client = keyed_client
    assert upload(client, "p", *GOOD[:2], headers=ENGINEER).status_code == 201
    policy = {"band": 1.0, "all_ng": True}  # every distance score up to twice the threshold, and every NG
    refused = client.put("/products/p/review-policy", json=policy, headers=OPERATOR)
    assert refused.status_code == 403 and "the engineer role is needed" in refused.json()["detail"]
    assert client.put("/products/p/review-policy", json=policy, headers=ENGINEER).status_code == 200
    assert client.put("/products/p/review-policy", json=policy, headers=ADMIN).status_code == 200
    assert client.get("/products/p/review-policy", headers=OPERATOR).status_code == 200
    inspection = client.post("/inspect", data={"product_id": "p"}, files=files(GOOD[2]), headers=OPERATOR).json()
    inspection_id = inspection["results"][0]["inspection_id"]
    waiting = client.get("/inspections/review-queue", headers=OPERATOR)
    assert waiting.status_code == 200 and [i["inspection_id"] for i in waiting.json()["items"]] == [inspection_id]
    assert client.get("/inspections/review-queue").status_code == 401
    feedback = {"label": "defect", "inspection_id": inspection_id}
    assert client.post("/products/p/feedback", data=feedback, headers=OPERATOR).status_code == 200
    record = client.get(f"/inspections/{inspection_id}", headers=OPERATOR).json()
    assert (record["review"], record["label"], record["reviewed_by"]) == ("reviewed", "defect", "anna")
    assert client.get("/inspections/review-queue", headers=OPERATOR).json()["pending"] == 0
    assert [r["actor"] for r in audit_rows(client, action="review_policy.set")] == ["cleo", "ben"]


def test_a_refused_change_writes_no_audit_row(keyed_client):
    client = keyed_client
    assert upload(client, "p", *GOOD[:2], headers=ENGINEER).status_code == 201
    assert client.put("/products/p/threshold", json={"threshold": 99.0}, headers=ENGINEER).status_code == 409
    assert client.put("/products/nope/threshold", json={"threshold": 0.5}, headers=ENGINEER).status_code == 404
    assert client.put("/products/p/threshold", json={"threshold": 0.5}, headers=OPERATOR).status_code == 403
    assert client.delete("/products/nope", headers=ADMIN).status_code == 404
    assert [row["action"] for row in audit_rows(client)] == ["references.upload"]


def test_the_audit_log_filters_pages_and_exports_json_lines(keyed_client):
    client = keyed_client
    for product in ("a", "b"):
        assert upload(client, product, *GOOD[:2], headers=ENGINEER).status_code == 201
    for threshold in (0.4, 0.5, 0.6):
        assert client.put("/products/a/threshold", json={"threshold": threshold}, headers=ADMIN).status_code == 200
    assert [r["after"]["threshold"] for r in audit_rows(client, product_id="a", action="threshold.set")] == [
        0.6, 0.5, 0.4,
    ]  # fmt: skip
    assert {r["product_id"] for r in audit_rows(client, actor="ben")} == {"a", "b"}
    assert audit_rows(client, actor="nobody") == []
    assert audit_rows(client, since="2999-01-01T00:00:00Z") == []
    assert len(audit_rows(client, until="2999-01-01T00:00:00Z")) == 5
    seen, cursor = [], None
    while True:
        page = client.get("/audit", params={"limit": 2, **({"cursor": cursor} if cursor else {})}, headers=ADMIN).json()
        seen += [row["audit_id"] for row in page["entries"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [row["audit_id"] for row in audit_rows(client)] and len(seen) == 5
    export = client.get("/audit", params={"format": "jsonl", "product_id": "a"}, headers=ADMIN)
    assert export.status_code == 200 and export.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in export.text.splitlines()]
    assert lines == audit_rows(client, product_id="a")
    assert client.get("/audit", params={"action": "nonsense"}, headers=ADMIN).status_code == 422
    assert client.get("/audit", params={"cursor": "x"}, headers=ADMIN).status_code == 422


def test_deprecated_api_keys_are_admins_named_key_n_with_a_warning(make_client, caplog):
    with caplog.at_level(logging.WARNING, logger="service.app"), make_client(api_keys="first,second") as client:
        assert LEGACY_WARNING in caplog.text
        headers = {"X-API-Key": "second"}
        assert upload(client, "p", *GOOD[:2], headers=headers).status_code == 201
        assert client.delete("/products/p", headers=headers).status_code == 204
        rows = client.get("/audit", headers=headers).json()["entries"]
        assert [(r["actor"], r["action"]) for r in rows] == [
            ("key-2", "product.delete"),
            ("key-2", "references.upload"),
        ]


def test_without_keys_the_actor_is_anonymous_and_no_warning(client, caplog):
    assert LEGACY_WARNING not in caplog.text
    assert upload(client, "p", *GOOD[:2]).status_code == 201
    assert client.put("/products/p/threshold", json={"threshold": 0.5}).status_code == 200
    assert [r["actor"] for r in client.get("/audit").json()["entries"]] == ["anonymous", "anonymous"]


def test_a_failed_audit_write_is_a_503_saying_the_change_was_made(client, monkeypatch):
    from sqlalchemy.exc import OperationalError

    assert upload(client, "p", *GOOD[:2]).status_code == 201

    def refuse(*_):
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    monkeypatch.setattr(client.app.state.services.recorder.audit, "append", refuse)
    answer = client.put("/products/p/threshold", json={"threshold": 0.5})
    assert answer.status_code == 503
    assert answer.json()["detail"].startswith("the change (threshold.set of p) was made, but its audit record was not")
    assert client.get("/products/p").json()["threshold"] == 0.5  # the change stands
    monkeypatch.undo()
    assert [r["action"] for r in client.get("/audit").json()["entries"]] == ["references.upload"]
