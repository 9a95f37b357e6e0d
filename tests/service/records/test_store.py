"""The records store on SQLite and on a real PostgreSQL server: idempotent batched inserts, filters, newest-first
keyset pages, the export in bounded batches, labels, the review queue (oldest first, cursor pages, a review takes
an item out), retention and review policies and the archive's expiry and size cap (never a pending review's)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from service.records.archive import RetentionPolicy
from service.records.database import SchemaTooNew, migrate
from service.records.review import ReviewPolicy
from service.records.store import BadCursor, RecordFilter, RecordStore, decode_cursor, encode_cursor, utc_now
from tests.service.records.rows import T0, row


def ids(rows) -> list[str]:
    return [r["inspection_id"] for r in rows]


def test_insert_is_idempotent_and_a_record_reads_back_whole(database):
    store = RecordStore(database)
    first = row(1, rules={"max_regions": 2}, regions=[{"id": 1, "area_px": 5}], trigger_time=T0, latency_ms=12.5)
    store.insert([first, row(2)])
    store.insert([first, row(3)])  # a spool segment inserted again after a crash, plus a new record
    found = store.get(first["inspection_id"])
    assert {k: found[k] for k in first} == first
    assert found["label"] is None
    assert store.get("f" * 32) is None
    assert len(store.page(RecordFilter(), 10)[0]) == 3


def test_filters_select_by_product_verdict_part_station_rule_and_time(database):
    store = RecordStore(database)
    store.insert(
        [row(n, product_id="a" if n < 5 else "b", anomalous=n % 3 == 0, station=f"st{n % 2}") for n in range(10)]
    )
    assert ids(store.page(RecordFilter(product_id="b"), 100)[0]) == [row(n)["inspection_id"] for n in (9, 8, 7, 6, 5)]
    assert ids(store.page(RecordFilter(anomalous=True), 100)[0]) == [row(n)["inspection_id"] for n in (9, 6, 3, 0)]
    assert ids(store.page(RecordFilter(part_id="SN-4"), 100)[0]) == [row(4)["inspection_id"]]
    assert len(store.page(RecordFilter(station="st1"), 100)[0]) == 5
    assert len(store.page(RecordFilter(rule="threshold", product_id="a"), 100)[0]) == 2  # 0 and 3
    window = RecordFilter(since=T0 + timedelta(seconds=2), until=T0 + timedelta(seconds=4))
    assert ids(store.page(window, 100)[0]) == [row(3)["inspection_id"], row(2)["inspection_id"]]


def test_pages_walk_every_record_newest_first_once_even_with_equal_times(database):
    store = RecordStore(database)
    store.insert([row(n, time=T0 + timedelta(seconds=n // 2)) for n in range(7)])  # pairs share a time
    seen, cursor = [], None
    while True:
        page, cursor = store.page(RecordFilter(), 3, cursor)
        seen += page
        if cursor is None:
            break
        cursor = decode_cursor(encode_cursor(*cursor))  # through the API's opaque text
    assert sorted(ids(seen)) == sorted(row(n)["inspection_id"] for n in range(7)) and len(seen) == 7
    keys = [(r["time"], r["inspection_id"]) for r in seen]
    assert keys == sorted(keys, reverse=True)


def test_export_yields_bounded_batches(database, monkeypatch):
    monkeypatch.setattr("service.records.store.EXPORT_BATCH", 4)
    store = RecordStore(database)
    store.insert([row(n) for n in range(10)])
    batches = list(store.export(RecordFilter()))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert ids(b for batch in batches for b in batch) == [row(n)["inspection_id"] for n in range(9, -1, -1)]


def test_a_bad_cursor_is_refused_and_every_cursor_the_pattern_allows_decodes():
    for cursor in ("nonsense", "bm8tYmFy", "", "1" * 16 + "a" * 32, "1" * 17 + "A" * 32):
        with pytest.raises(BadCursor):
            decode_cursor(cursor)
    for cursor in ("0" * 49, "9" * 17 + "f" * 32):  # the extremes of the pattern: years 1970 and 5138
        assert encode_cursor(*decode_cursor(cursor)) == cursor


def test_the_latest_review_is_the_label(database):
    store = RecordStore(database)
    store.insert([row(1), row(2)])
    store.add_review(row(1)["inspection_id"], "p", "good")
    store.add_review(row(1)["inspection_id"], "p", "defect")
    labels = {r["inspection_id"]: r["label"] for r in store.page(RecordFilter(), 10)[0]}
    assert labels == {row(1)["inspection_id"]: "defect", row(2)["inspection_id"]: None}


def test_retention_policies_are_set_and_replaced(database):
    store = RecordStore(database)
    store.set_policy("a", RetentionPolicy(True, 0, 7))
    store.set_policy("a", RetentionPolicy(False, 5, 3))
    store.set_policy("b", RetentionPolicy(True, 1, 90))
    assert store.policies() == {"a": RetentionPolicy(False, 5, 3), "b": RetentionPolicy(True, 1, 90)}


def test_frames_past_their_products_days_and_beyond_the_size_cap_are_no_longer_kept(database):
    store = RecordStore(database)
    kept = {"frame_kept": True, "frame_bytes": 100}
    store.insert([row(n, product_id="short" if n < 3 else "long", frame_sha256=f"{n:064x}", **kept) for n in range(6)])
    now = T0 + timedelta(days=5)
    assert store.expire_frames({"short": RetentionPolicy(True, 1, 2)}, RetentionPolicy(True, 1, 30), now) == 3
    assert store.unreferenced([f"{n:064x}" for n in range(6)]) == [f"{n:064x}" for n in range(3)]
    assert store.cap_frames(150) == 2  # 300 bytes kept: the two oldest of "long" go
    assert [r["frame_kept"] for r in sorted(store.page(RecordFilter(), 10)[0], key=lambda r: r["time"])] == [
        False, False, False, False, False, True,
    ]  # fmt: skip


def test_the_review_queue_lists_pending_records_oldest_first_in_cursor_pages(database):
    store = RecordStore(database)
    pending = [n for n in range(12) if n % 3 != 2]  # 8 pending records, 4 never queued
    store.insert(
        [row(n, product_id="a" if n < 6 else "b", review="pending" if n in pending else None) for n in range(12)]
    )
    store.insert([row(12, time=T0 + timedelta(seconds=1), review="pending")])  # the same time as record 1
    seen, cursor, counts = [], None, []
    while True:
        page, cursor, count = store.review_queue(None, 3, cursor)
        seen += page
        counts.append(count)
        if cursor is None:
            break
        cursor = decode_cursor(encode_cursor(*cursor))  # through the API's opaque text
    assert ids(seen) == [row(n)["inspection_id"] for n in (0, 1, 12, 3, 4, 6, 7, 9, 10)]
    assert counts == [9, 9, 9] and all(r["thumbnail"] is not None for r in seen)
    page, cursor, count = store.review_queue("a", 10)
    assert ids(page) == [row(n)["inspection_id"] for n in (0, 1, 3, 4)] and cursor is None and count == 4
    assert store.review_queue("nope", 10) == ([], None, 0)


def test_a_review_takes_a_record_out_of_the_queue_with_who_and_when(database):
    store = RecordStore(database)
    store.insert([row(n, review="pending") for n in range(3)] + [row(3)])
    store.add_review(row(1)["inspection_id"], "p", "good", "anna")
    store.add_review(row(3)["inspection_id"], "p", "defect")  # never queued: stays so
    page, _, count = store.review_queue("p", 10)
    assert ids(page) == [row(0)["inspection_id"], row(2)["inspection_id"]] and count == 2
    assert store.get(row(1)["inspection_id"])["review"] == "reviewed"
    assert store.get(row(3)["inspection_id"])["review"] is None
    [review] = store.reviews_of(row(1)["inspection_id"])
    assert (review["label"], review["author"], review["source"]) == ("good", "anna", "feedback")
    assert abs(review["time"] - utc_now()) < timedelta(minutes=5)
    store.add_review(row(1)["inspection_id"], "p", "defect", "ben")  # a second opinion: the latest is the label
    assert store.get(row(1)["inspection_id"])["label"] == "defect" and store.review_queue("p", 10)[2] == 2


def test_review_policies_are_set_and_replaced(database):
    store = RecordStore(database)
    store.set_review_policy("a", ReviewPolicy(0.1, False))
    store.set_review_policy("a", ReviewPolicy(0.25, True))
    store.set_review_policy("b", ReviewPolicy(0.0, True))
    assert store.review_policies() == {"a": ReviewPolicy(0.25, True), "b": ReviewPolicy(0.0, True)}


def test_frames_waiting_for_review_are_neither_expired_nor_capped(database):
    store = RecordStore(database)
    kept = {"frame_kept": True, "frame_bytes": 100}
    store.insert([row(n, frame_sha256=f"{n:064x}", review="pending" if n < 2 else None, **kept) for n in range(4)])
    now = T0 + timedelta(days=5)
    assert store.expire_frames({"p": RetentionPolicy(True, 1, 2)}, RetentionPolicy(True, 1, 30), now) == 2
    assert store.unreferenced([f"{n:064x}" for n in range(4)]) == [f"{n:064x}" for n in (2, 3)]
    store.insert([row(n, frame_sha256=f"{n:064x}", **kept) for n in range(4, 6)])
    assert store.cap_frames(100) == 2  # 400 bytes kept; the two pending ones stay, the others go oldest first
    assert [r["frame_kept"] for r in sorted(store.page(RecordFilter(), 10)[0], key=lambda r: r["time"])] == [
        True, True, False, False, False, False,
    ]  # fmt: skip
    store.add_review(row(0)["inspection_id"], "p", "good")  # reviewed: its frame follows the policy again
    assert store.expire_frames({"p": RetentionPolicy(True, 1, 2)}, RetentionPolicy(True, 1, 30), now) == 1


def test_a_schema_newer_than_the_code_is_refused(database):
    with database.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    with pytest.raises(SchemaTooNew, match="9999_future"):
        migrate(database)
