"""The audit table (migration 0002) on both databases: rows as written, filters, keyset pages, the export."""

from __future__ import annotations

from datetime import timedelta

from service.records.audit import AuditFilter, AuditLog
from service.records.store import utc_now


def test_rows_keep_actor_action_and_json_before_after(database):
    log = AuditLog(database)
    log.append("ben", "threshold.set", "p", {"threshold": 0.4, "rules": None}, {"threshold": 0.5, "rules": [1]})
    log.append("cleo", "product.delete", "q", {"version": 3}, None)
    rows, cursor = log.page(AuditFilter(), 10)
    assert cursor is None
    assert [(r["actor"], r["action"], r["product_id"]) for r in rows] == [
        ("cleo", "product.delete", "q"),
        ("ben", "threshold.set", "p"),
    ]
    assert rows[1]["before"] == {"threshold": 0.4, "rules": None} and rows[1]["after"] == {
        "threshold": 0.5,
        "rules": [1],
    }
    assert rows[0]["after"] is None and abs(rows[0]["time"] - utc_now()) < timedelta(minutes=5)


def test_filters_pages_and_export_select_the_same_rows(database):
    log = AuditLog(database)
    for n in range(7):
        log.append("anna" if n % 2 else "ben", "feedback" if n < 4 else "retention.set", f"p{n % 3}", None, {"n": n})
    assert [r["after"]["n"] for r in log.page(AuditFilter(actor="anna"), 10)[0]] == [5, 3, 1]
    assert [r["after"]["n"] for r in log.page(AuditFilter(product_id="p0", action="feedback"), 10)[0]] == [3, 0]
    assert log.page(AuditFilter(since=utc_now() + timedelta(hours=1)), 10)[0] == []
    assert len(log.page(AuditFilter(until=utc_now() + timedelta(hours=1)), 10)[0]) == 7
    seen, cursor = [], None
    while True:
        rows, cursor = log.page(AuditFilter(), 3, cursor)
        seen += [r["after"]["n"] for r in rows]
        if cursor is None:
            break
    assert seen == [6, 5, 4, 3, 2, 1, 0]
    assert [r["after"]["n"] for batch in log.export(AuditFilter(action="retention.set")) for r in batch] == [6, 5, 4]
