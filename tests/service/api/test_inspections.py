"""GET /inspections (filters, cursor pages, CSV export), one record, its archived frame, the retention route, and
feedback by inspection id from another replica: two apps on one data dir (SQLite) or one PostgreSQL database."""

from __future__ import annotations

import csv
import io
import types
from datetime import UTC, datetime, timedelta

from service.api.routes.inspections import csv_chunks
from tests.helpers.apps import inspect_part, upload
from tests.helpers.images import image_bytes

GOOD = [image_bytes(56, 48, seed=s) for s in range(3)]
DEFECT = image_bytes(56, 48, seed=9, defect=True)


def test_a_record_answers_what_was_decided_about_a_part(replicas):
    with replicas() as client:
        upload(client, "p", *GOOD[:2])
        trigger = datetime.now(UTC) - timedelta(seconds=2)
        result = inspect_part(client, "p", DEFECT, part_id="SN-1234", station="st1", trigger_time=trigger.isoformat())
        found = client.get("/inspections", params={"part_id": "SN-1234"}).json()["inspections"]
        assert [r["inspection_id"] for r in found] == [result["inspection_id"]]
        record = client.get(f"/inspections/{result['inspection_id']}").json()
        product = client.get("/products/p").json()
        assert record["verdict"] == "NG" and record["anomalous"] is True and record["rule"] == "threshold"
        assert record["score"] == result["score"] and record["threshold"] == product["threshold"]
        assert record["reference_version"] == product["version"] and record["model_config"] == "tiny"
        assert record["station"] == "st1" and record["frame_kept"] and len(record["weights_checksum"]) == 16
        assert set(record["timings_ms"]) >= {"decode", "queue", "predict", "encode"}
        assert 2000 <= record["latency_ms"] < 60_000  # from the trigger, two seconds before
        frame = client.get(f"/inspections/{result['inspection_id']}/frame")
        assert frame.status_code == 200 and frame.content == DEFECT
        assert client.get(f"/inspections/{'0' * 32}").status_code == 404
        assert client.get(f"/inspections/{'0' * 32}/frame").status_code == 404
        assert client.get("/inspections/not-an-id").status_code == 422


def test_filters_and_cursor_pages_list_every_record_once_newest_first(replicas):
    with replicas() as client:
        upload(client, "p", *GOOD[:2])
        ids = [
            inspect_part(client, "p", DEFECT if n % 2 else GOOD[2], part_id=f"SN-{n}")["inspection_id"]
            for n in range(5)
        ]
        seen, params = [], {"product_id": "p", "limit": 2}
        while True:
            page = client.get("/inspections", params=params).json()
            seen += [r["inspection_id"] for r in page["inspections"]]
            if page["next_cursor"] is None:
                break
            params["cursor"] = page["next_cursor"]
        assert seen == ids[::-1]
        assert [r["part_id"] for r in client.get("/inspections", params={"verdict": "NG"}).json()["inspections"]] == [
            "SN-3",
            "SN-1",
        ]
        future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        assert client.get("/inspections", params={"since": future}).json()["inspections"] == []
        assert client.get("/inspections", params={"cursor": "nonsense"}).status_code == 422
        assert client.get("/inspections", params={"verdict": "maybe"}).status_code == 422
        assert client.get("/inspections", params={"part_id": "SN\x00-1"}).status_code == 422  # not a tag
        assert client.get("/inspections", params={"station": "é"}).status_code == 422
        assert client.get("/inspections", params={"since": "0001-01-01T00:00:00+05:00"}).status_code == 422
        for not_a_time in ("0.5", "1700000000", "2026-03-01"):
            assert client.get("/inspections", params={"until": not_a_time}).status_code == 422, not_a_time


def test_the_csv_export_has_every_matching_record(replicas):
    with replicas() as client:
        upload(client, "p", *GOOD[:2])
        ids = [inspect_part(client, "p", DEFECT, part_id=f"SN-{n}")["inspection_id"] for n in range(3)]
        response = client.get("/inspections", params={"format": "csv", "limit": 1, "verdict": "NG"})
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert [r["inspection_id"] for r in rows] == ids[::-1]  # `limit` does not apply to the export
        assert rows[0]["verdict"] == "NG" and rows[0]["part_id"] == "SN-2" and rows[0]["rules_fired"] == '["threshold"]'


def test_the_csv_export_is_a_generator_of_one_chunk_per_batch():
    batches = [[{"n": 1}], [{"n": 2}, {"n": 3}]]
    store = types.SimpleNamespace(export=lambda where: iter(batches))
    rows_seen = []
    import service.api.routes.inspections as module

    original = module.csv_row
    module.csv_row = lambda record: rows_seen.append(record["n"]) or [record["n"]]
    try:
        chunks = csv_chunks(store, None)
        assert isinstance(chunks, types.GeneratorType)
        assert next(chunks).startswith("inspection_id,") and rows_seen == [1]  # the first batch only, so far
        assert list(chunks) == ["2\r\n3\r\n"]
    finally:
        module.csv_row = original


def test_retention_is_set_per_product_and_followed(replicas):
    with replicas() as client:
        upload(client, "p", *GOOD[:2])
        assert client.get("/products/p/retention").json() == {
            "product_id": "p",
            "default": True,
            "keep_ng": True,
            "keep_ok_every": 1,
            "days": 30,
        }
        put = client.put("/products/p/retention", json={"keep_ng": False, "keep_ok_every": 0, "days": 7})
        assert put.status_code == 200 and put.json()["default"] is False
        assert client.get("/products/p/retention").json()["keep_ng"] is False
        integral = client.put("/products/p/retention", json={"keep_ng": False, "keep_ok_every": 0.0, "days": 7.0})
        assert integral.status_code == 200 and integral.json()["days"] == 7  # JSON Schema's integer
        # DEFECT scores within 10 % of the threshold: the default review band would keep its frame for a person
        assert client.put("/products/p/review-policy", json={"band": 0.0, "all_ng": False}).status_code == 200
        result = inspect_part(client, "p", DEFECT)
        assert client.get(f"/inspections/{result['inspection_id']}").json()["frame_kept"] is False
        assert client.get(f"/inspections/{result['inspection_id']}/frame").status_code == 404
        for bad in (
            {"keep_ok_every": -1},
            {"keep_ok_every": False},
            {"keep_ng": 1},
            {"days": "7"},
            {"days": 1.5},
            {"extra": 1},
        ):
            body = {"keep_ng": True, "keep_ok_every": 1, "days": 7, **bad}
            assert client.put("/products/p/retention", json=body).status_code == 422, bad
        assert (
            client.put("/products/nope/retention", json={"keep_ng": True, "keep_ok_every": 1, "days": 1}).status_code
            == 404
        )


def test_every_replica_lists_and_labels_every_inspection(replicas):
    with replicas() as first, replicas() as second:
        upload(first, "p", *GOOD[:2])
        result = inspect_part(first, "p", DEFECT)
        first.get("/inspections")  # the first replica's spool is written (a read flushes it)
        listed = second.get("/products/p/inspections").json()["inspections"]
        assert [i["inspection_id"] for i in listed] == [result["inspection_id"]]
        labelled = second.post(
            "/products/p/feedback",
            data={"label": "defect", "inspection_id": result["inspection_id"]},
        )
        assert labelled.status_code == 200, labelled.text  # the frame from the shared archive
        assert first.get(f"/inspections/{result['inspection_id']}").json()["label"] == "defect"


def test_records_survive_a_restart(make_client):
    with make_client() as client:
        upload(client, "p", *GOOD[:2])
        result = inspect_part(client, "p", GOOD[2], part_id="SN-1")
    with make_client() as client:
        assert (
            client.get("/inspections", params={"part_id": "SN-1"}).json()["inspections"][0]["inspection_id"]
            == (result["inspection_id"])
        )


def test_inspections_go_on_while_postgresql_is_down_and_every_record_arrives(make_client, postgres_server):
    url = postgres_server.new_database("outage_test")
    with make_client(database_url=url, records_flush_s=0.05) as client:
        upload(client, "p", *GOOD[:2])
        postgres_server.stop()
        try:
            answered = [inspect_part(client, "p", DEFECT, station="outage")["inspection_id"] for _ in range(5)]
            assert client.get("/inspections").status_code == 503  # reads need the database; inspections do not
            feedback = client.post("/products/p/feedback", data={"label": "defect", "inspection_id": answered[0]})
            assert feedback.status_code == 503
        finally:
            postgres_server.start()
        listed = client.get("/inspections", params={"station": "outage"}).json()["inspections"]
        assert [r["inspection_id"] for r in listed] == answered[::-1]
        assert all(r["frame_kept"] for r in listed)  # archived meanwhile
