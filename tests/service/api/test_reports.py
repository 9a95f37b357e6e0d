"""GET /reports/yield and /reports/pareto through the app (the fake detector), on SQLite and PostgreSQL: the counts
of the inspections sent, the review that turns an NG into a false reject, the default range, and the 422s."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.helpers.apps import files, upload
from tests.helpers.images import image_bytes

GOOD = [image_bytes(56, 48, seed=s) for s in range(3)]
DEFECT = image_bytes(56, 48, seed=9, defect=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def client(request, make_client):
    settings = {"records_flush_s": 60.0}  # flushed by the reads
    if request.param == "postgresql":
        settings["database_url"] = request.getfixturevalue("postgres_server").new_database("reports_test")
    with make_client(**settings) as test_client:
        yield test_client


def inspected(client, product_id: str, *payloads: bytes) -> list[dict]:
    answer = client.post("/inspect", data={"product_id": product_id}, files=files(*payloads))
    assert answer.status_code == 200, answer.text
    return answer.json()["results"]


def counts(bucket: dict) -> tuple:
    names = ("inspected", "ok", "ng", "reviewed", "false_rejects", "escapes")
    return tuple(bucket[name] for name in names)


def test_yield_counts_what_was_inspected_and_reviewed(client):
    upload(client, "p", *GOOD[:2])
    upload(client, "q", *GOOD[:2])
    results = inspected(client, "p", GOOD[2], DEFECT, DEFECT) + inspected(client, "q", GOOD[2])
    assert [r["anomalous"] for r in results] == [False, True, True, False]
    review = {"label": "good", "inspection_id": results[1]["inspection_id"], "force": "true"}
    assert client.post("/products/p/feedback", data=review).status_code == 200, "an NG reviewed good"

    report = client.get("/reports/yield").json()  # the last 24 hours, per hour
    assert report["by"] == "hour" and report["timezone"] == "UTC" and report["product_id"] is None
    assert len(report["buckets"]) == 24
    assert counts(report["total"]) == (4, 2, 2, 1, 1, 0)
    assert report["total"]["first_pass_yield"] == 0.5
    assert counts(report["buckets"][-1]) == (4, 2, 2, 1, 1, 0), "this hour is the last bucket"

    by_product = client.get("/reports/yield", params={"by": "product"}).json()["buckets"]
    assert [(b["key"], counts(b)) for b in by_product] == [("p", (3, 1, 2, 1, 1, 0)), ("q", (1, 1, 0, 0, 0, 0))]
    assert by_product[0]["first_pass_yield"] == pytest.approx(1 / 3)
    only_q = client.get("/reports/yield", params={"product_id": "q", "by": "shift"}).json()
    assert only_q["total"]["inspected"] == 1 and sum(b["inspected"] for b in only_q["buckets"]) == 1
    assert all(b["key"].split(" ")[1] in ("early", "late", "night") for b in only_q["buckets"])


def test_pareto_by_rule_and_by_region(client):
    upload(client, "p", *GOOD[:2])
    product = client.get("/products/p").json()
    low = {"threshold": product["threshold"], "pixel_threshold": product["pixel_threshold"] / 2}  # gives regions
    assert client.put("/products/p/threshold", json=low).status_code == 200
    results = inspected(client, "p", DEFECT, DEFECT, GOOD[2])
    rules = client.get("/reports/pareto").json()
    assert (rules["by"], rules["ng"], rules["grid"], rules["without_region"]) == ("rule", 2, None, None)
    assert [(e["key"], e["count"], e["percent"], e["cumulative_percent"]) for e in rules["entries"]] == [
        ("threshold", 2, 100.0, 100.0)
    ]
    cells = client.get("/reports/pareto", params={"by": "region", "grid": 4}).json()
    assert (cells["ng"], cells["grid"], cells["without_region"]) == (2, 4, 0)
    expected: dict[str, int] = {}
    for result in results[:2]:  # the NG ones; a 56 x 48 frame in 4 x 4 cells of 14 x 12 pixels
        assert result["anomalous"] and result["regions"]
        keys = {f"R{int(r['centroid'][1] // 12) + 1}C{int(r['centroid'][0] // 14) + 1}" for r in result["regions"]}
        for key in keys:
            expected[key] = expected.get(key, 0) + 1
    assert {e["key"]: e["count"] for e in cells["entries"]} == expected
    assert cells["entries"][-1]["cumulative_percent"] == 100.0


def test_a_range_names_its_bounds_and_bad_ranges_are_422(client):
    since = datetime(2026, 3, 1, 6, tzinfo=UTC)
    until = since + timedelta(hours=8)
    answer = client.get("/reports/yield", params={"since": since.isoformat(), "until": until.isoformat()})
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert (report["since"], report["until"]) == ("2026-03-01T06:00:00Z", "2026-03-01T14:00:00Z")
    assert [b["key"][11:16] for b in report["buckets"]] == [f"{h:02d}:00" for h in range(6, 14)]
    shifts = client.get(
        "/reports/yield", params={"since": since.isoformat(), "until": until.isoformat(), "by": "shift"}
    )
    assert [b["key"] for b in shifts.json()["buckets"]] == ["2026-03-01 early"]
    bad = [
        {"since": until.isoformat(), "until": since.isoformat()},  # backwards
        {"since": since.isoformat(), "until": since.isoformat()},  # empty
        {"since": (until - timedelta(days=93)).isoformat(), "until": until.isoformat()},  # too long
        {"since": "yesterday"},
        {"since": "9998-12-31T23:00:00Z", "until": "9999-12-31T23:00:00Z"},  # past the reports' years
        {"since": "0001-01-01T00:00:00Z", "until": "0001-01-01T01:00:00Z"},
        {"until": "9999-12-31T23:59:59-05:00"},  # past datetime's range once in UTC
        {"by": "week"},
    ]
    for params in bad:
        refused = client.get("/reports/yield", params=params)
        assert refused.status_code == 422, (params, refused.text)
    assert "must be before until" in client.get("/reports/yield", params=bad[0]).json()["detail"]
    for params in ({"by": "region", "grid": 0}, {"by": "region", "grid": 17}, {"by": "cause"}):
        assert client.get("/reports/pareto", params=params).status_code == 422, params


def test_the_report_time_zone_and_shifts_are_the_settings(make_client):
    with make_client(timezone="Asia/Kolkata", shifts="day=06:00-18:00,night=18:00-06:00") as client:
        params = {"since": "2026-03-01T00:30:00Z", "until": "2026-03-01T13:30:00Z"}  # 06:00-19:00 local
        hourly = client.get("/reports/yield", params=params).json()
        assert hourly["timezone"] == "Asia/Kolkata"
        assert hourly["buckets"][0]["key"] == "2026-03-01T06:00:00+05:30" and len(hourly["buckets"]) == 13
        shifts = client.get("/reports/yield", params={**params, "by": "shift"}).json()["buckets"]
        assert [b["key"] for b in shifts] == ["2026-03-01 day", "2026-03-01 night"]
        assert shifts[1]["start"] == "2026-03-01T18:00:00+05:30"
