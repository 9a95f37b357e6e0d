"""The reports on SQLite and on a real PostgreSQL server: counts and first-pass yield per hour, shift and product,
false rejects and escapes from the latest review, the Pareto of rejects by rule and by grid cell; and the grid
assignment alone."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from service.records.reports import ReportRange, grid_cell, region_pareto, rule_pareto, yield_report
from service.records.shifts import DEFAULT_SHIFTS, parse_shifts, parse_timezone
from service.records.store import RecordStore
from tests.service.records.rows import T0, row

UTC_ZONE = parse_timezone("UTC")
SHIFTS = parse_shifts(DEFAULT_SHIFTS)
DAY = ReportRange(datetime(2026, 3, 1), datetime(2026, 3, 3))


def at(n: int, time: datetime, anomalous: bool = False, **fields) -> dict:
    return row(n, anomalous=anomalous, time=time, **fields)


def counts(bucket) -> tuple:
    return bucket.inspected, bucket.ok, bucket.ng, bucket.reviewed, bucket.false_rejects, bucket.escapes


def test_hours_split_on_the_hour_and_every_hour_of_the_range_is_a_bucket(database):
    store = RecordStore(database)
    store.insert(
        [
            at(1, T0),  # 08:00:00, the first instant of its hour
            at(2, T0 + timedelta(minutes=59, seconds=59, microseconds=999_999), anomalous=True),
            at(3, T0 + timedelta(hours=1)),  # 09:00:00: the next hour
            at(4, T0 + timedelta(hours=1, minutes=30)),
            at(5, T0 + timedelta(hours=3)),  # 11:00: outside the range
        ]
    )
    report = yield_report(database, ReportRange(T0, T0 + timedelta(hours=3)), "hour", UTC_ZONE, SHIFTS)
    assert [b.key for b in report.buckets] == [f"2026-03-01T{h:02d}:00:00+00:00" for h in (8, 9, 10)]
    assert [counts(b) for b in report.buckets] == [(2, 1, 1, 0, 0, 0), (2, 2, 0, 0, 0, 0), (0, 0, 0, 0, 0, 0)]
    assert [b.first_pass_yield for b in report.buckets] == [0.5, 1.0, None]
    assert counts(report.total) == (4, 3, 1, 0, 0, 0) and report.total.first_pass_yield == 0.75


def test_hours_are_the_time_zones(database):
    store = RecordStore(database)
    store.insert([at(1, datetime(2026, 3, 1, 8, 29)), at(2, datetime(2026, 3, 1, 8, 30))])
    kolkata = parse_timezone("Asia/Kolkata")  # UTC+05:30: 08:29 UTC is 13:59 local, 08:30 UTC is 14:00
    report = yield_report(database, ReportRange(T0, T0 + timedelta(hours=1)), "hour", kolkata, SHIFTS)
    assert [(b.key, b.inspected) for b in report.buckets] == [
        ("2026-03-01T13:00:00+05:30", 1),
        ("2026-03-01T14:00:00+05:30", 1),
    ]


def test_the_latest_review_decides_false_rejects_and_escapes(database):
    store = RecordStore(database)
    store.insert([at(n, T0 + timedelta(minutes=n), anomalous=n < 4) for n in range(8)])
    reviews = {
        0: ["defect", "good"],  # NG, finally good: a false reject
        1: ["good", "defect"],  # NG, finally a defect: confirmed
        2: ["good"],  # NG, good: a false reject
        4: ["good", "defect"],  # OK, finally a defect: an escape
        5: ["defect", "good"],  # OK, finally good
        6: ["defect"],  # OK, a defect: an escape
    }
    for n, labels in reviews.items():
        for label in labels:
            store.add_review(row(n)["inspection_id"], "p", label)
    report = yield_report(database, DAY, "product", UTC_ZONE, SHIFTS)
    (product,) = report.buckets
    assert product.key == "p"
    assert counts(product) == (8, 4, 4, 6, 2, 2)
    assert counts(report.total) == counts(product)


def test_shifts_crossing_midnight_count_on_the_day_they_start(database):
    store = RecordStore(database)
    store.insert(
        [
            at(1, datetime(2026, 3, 1, 23, 30)),
            at(2, datetime(2026, 3, 2, 5, 59), anomalous=True),  # still the night of the 1st
            at(3, datetime(2026, 3, 2, 6, 0)),  # the early shift of the 2nd
        ]
    )
    window = ReportRange(datetime(2026, 3, 1, 22), datetime(2026, 3, 2, 14))
    report = yield_report(database, window, "shift", UTC_ZONE, SHIFTS)
    assert [(b.key, b.inspected, b.ng) for b in report.buckets] == [
        ("2026-03-01 night", 2, 1),
        ("2026-03-02 early", 1, 0),
    ]
    day_only = parse_shifts("day=08:00-16:00")  # the night is no shift: its inspections count in the total only
    report = yield_report(database, window, "shift", UTC_ZONE, day_only)
    assert [(b.key, b.inspected) for b in report.buckets] == [("2026-03-02 day", 0)]
    assert report.total.inspected == 3


def test_products_are_buckets_and_a_product_filter_selects(database):
    store = RecordStore(database)
    store.insert([row(n, product_id="b" if n % 3 else "a", anomalous=n % 2 == 0) for n in range(9)])
    report = yield_report(database, DAY, "product", UTC_ZONE, SHIFTS)
    assert [(b.key, b.inspected, b.ng) for b in report.buckets] == [("a", 3, 2), ("b", 6, 3)]
    only_a = yield_report(database, ReportRange(DAY.since, DAY.until, "a"), "hour", UTC_ZONE, SHIFTS)
    assert only_a.total.inspected == 3 and sum(b.inspected for b in only_a.buckets) == 3


def test_rule_pareto_sorts_the_rejects_with_cumulative_percent(database):
    store = RecordStore(database)
    rules = ["threshold", "threshold", "threshold", "max_area_px", None, None, "threshold"]
    store.insert([row(n, anomalous=True, rule=rule) for n, rule in enumerate(rules)])
    store.insert([row(100)])  # OK: not a reject
    report = rule_pareto(database, DAY)
    assert report.ng == 7
    got = [(e.key, e.count, round(e.percent, 2), round(e.cumulative_percent, 2)) for e in report.entries]
    assert got == [("threshold", 4, 57.14, 57.14), ("score", 2, 28.57, 85.71), ("max_area_px", 1, 14.29, 100.0)]


def region(x: float, y: float) -> dict:
    return {"id": 1, "bbox": [0, 0, 1, 1], "centroid": [x, y], "area_px": 20}


@pytest.mark.parametrize("batch", [1000, 2])
def test_region_pareto_counts_each_reject_once_per_cell(database, monkeypatch, batch):
    monkeypatch.setattr("service.records.reports.EXPORT_BATCH", batch)  # several keyset batches give the same
    store = RecordStore(database)
    frames = [
        [region(10, 10), region(20, 20)],  # two regions in R1C1: counted once
        [region(10, 10), region(390, 290)],  # R1C1 and R4C4 (a 400 x 300 frame in 4 x 4: cells 100 x 75)
        [region(100, 75)],  # on the lines between cells: the lower right one, R2C2
        [region(99.9, 74.9)],  # just inside R1C1
        [],  # rejected by the score alone, no listed region
    ]
    store.insert([row(n, anomalous=True, regions=r, width=400, height=300) for n, r in enumerate(frames)])
    store.insert([row(50, regions=[region(10, 10)], width=400, height=300)])  # OK: not counted
    report = region_pareto(database, DAY, 4)
    assert (report.ng, report.without_region) == (5, 1)
    assert [(e.key, e.count, e.row, e.col) for e in report.entries] == [
        ("R1C1", 3, 1, 1),
        ("R2C2", 1, 2, 2),
        ("R4C4", 1, 4, 4),
    ]
    assert report.entries[-1].cumulative_percent == 100.0
    coarse = region_pareto(database, DAY, 1)
    assert [(e.key, e.count) for e in coarse.entries] == [("R1C1", 4)]


@pytest.mark.parametrize(
    ("point", "cell"),
    [
        ((0, 0), (1, 1)),
        ((99.99, 74.99), (1, 1)),
        ((100, 0), (1, 2)),  # on a vertical line: the right cell
        ((0, 75), (2, 1)),  # on a horizontal line: the lower cell
        ((300, 225), (4, 4)),
        ((399, 299), (4, 4)),
        ((400, 300), (4, 4)),  # the far edges: the last cells
    ],
)
def test_grid_cells_hold_their_top_and_left_edges(point, cell):
    assert grid_cell(*point, 400, 300, 4) == cell
