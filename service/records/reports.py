"""Reports over the records (SQLAlchemy Core, the same queries on SQLite and PostgreSQL): first-pass yield and counts
per hour, shift or product, with the false rejects and escapes the operators' reviews found; and the Pareto of the
rejects by rule or by where their regions lie in the frame.

Definitions (docs/records.md): first-pass yield = OK / inspected, the service's own verdicts, before any review; a
false reject is an NG whose latest review says "good", an escape an OK whose latest review says "defect".

The counting is the database's: it groups the range's records by UTC minute (a dialect's own truncation), product,
verdict and latest label, so one row stands for up to a minute of a product's inspections and the rows stream in
whatever the count. Python then puts each minute into its local hour or shift (zoneinfo: DST and zones offset by
half hours, which neither database's hour truncation of a UTC time can do alike). The region Pareto reads the rejects'
regions in keyset batches (EXPORT_BATCH): memory stays bounded by a batch and the buckets."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, func, literal_column, select, tuple_

from service.records.shifts import Shift, hour_start, hours, shift_of, shift_slots
from service.records.store import EXPORT_BATCH, where
from service.records.tables import inspections, reviews

YieldBy = Literal["hour", "shift", "product"]
ParetoBy = Literal["rule", "region"]
SCORE_ONLY = "score"  # the rule name of an NG without a rule on the record (the score alone rejected it)


@dataclass
class YieldCounts:
    """One bucket's counts: inspected = ok + ng; reviewed: inspections with at least one review."""

    key: str
    start: datetime | None = None  # aware, the report's time zone; None for a product bucket
    end: datetime | None = None
    inspected: int = 0
    ok: int = 0
    ng: int = 0
    reviewed: int = 0
    false_rejects: int = 0  # NG by the service, latest review "good"
    escapes: int = 0  # OK by the service, latest review "defect"

    @property
    def first_pass_yield(self) -> float | None:
        """OK / inspected (0-1); None without inspections."""
        return self.ok / self.inspected if self.inspected else None

    def add(self, anomalous: bool, label: str | None, count: int) -> None:
        """Count `count` inspections of one verdict and latest label (None: not reviewed)."""
        self.inspected += count
        self.ok += 0 if anomalous else count
        self.ng += count if anomalous else 0
        self.reviewed += 0 if label is None else count
        self.false_rejects += count if anomalous and label == "good" else 0
        self.escapes += count if not anomalous and label == "defect" else 0


@dataclass
class YieldReport:
    """The buckets in time (or product) order, and their total over the range."""

    buckets: list[YieldCounts]
    total: YieldCounts


@dataclass(frozen=True)
class ParetoEntry:
    """One cause: its name (a rule, or a grid cell "R2C3": row 2, column 3 from the top left), its count, its share
    of all counts and the cumulative share up to it (percent)."""

    key: str
    count: int
    percent: float
    cumulative_percent: float
    row: int | None = None  # 1-based, region Pareto only
    col: int | None = None


@dataclass
class ParetoReport:
    """The causes, most frequent first; `ng`: NG inspections in the range; `without_region`: those of them with no
    listed region (region Pareto only)."""

    entries: list[ParetoEntry]
    ng: int
    without_region: int = 0


@dataclass(frozen=True)
class ReportRange:
    """What a report covers: [since, until) (stored times: UTC, no zone) and one product or all (None)."""

    since: datetime
    until: datetime
    product_id: str | None = None

    def clause(self) -> Any:
        """The WHERE clause over `inspections`."""
        return where(inspections.c, {"product_id": self.product_id}, self.since, self.until)


def _minute(engine: Engine) -> Any:
    """The dialect's truncation of `inspections.time` to its minute (literal arguments: the GROUP BY must repeat the
    SELECT's expression exactly, which bound parameters do not on PostgreSQL)."""
    if engine.dialect.name == "postgresql":
        return func.date_trunc(literal_column("'minute'"), inspections.c.time)
    return func.strftime(literal_column("'%Y-%m-%d %H:%M:00'"), inspections.c.time)


def _as_time(value: datetime | str) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def _latest_labels() -> Any:
    """(inspection_id, label) of each reviewed inspection's latest review."""
    latest = select(func.max(reviews.c.review_id).label("review_id")).group_by(reviews.c.inspection_id).subquery()
    query = select(reviews.c.inspection_id, reviews.c.label).join(latest, reviews.c.review_id == latest.c.review_id)
    return query.subquery()


def minute_counts(engine: Engine, report: ReportRange) -> Iterator[tuple[datetime, str, bool, str | None, int]]:
    """(UTC minute, product, anomalous, latest label or None, count) of the range's inspections, streamed."""
    c, labels = inspections.c, _latest_labels()
    minute = _minute(engine).label("minute")
    query = (
        select(minute, c.product_id, c.anomalous, labels.c.label, func.count().label("n"))
        .select_from(inspections.outerjoin(labels, labels.c.inspection_id == c.inspection_id))
        .where(report.clause())
        .group_by(minute, c.product_id, c.anomalous, labels.c.label)
    )
    with engine.connect() as connection:
        for row in connection.execution_options(yield_per=EXPORT_BATCH).execute(query):
            yield _as_time(row.minute), row.product_id, bool(row.anomalous), row.label, int(row.n)


def yield_report(
    engine: Engine, report: ReportRange, by: YieldBy, zone: ZoneInfo, shifts: tuple[Shift, ...]
) -> YieldReport:
    """Counts and first-pass yield per local hour (every hour of the range, empty ones too), per shift slot (every
    one overlapping the range; inspections between shifts count in the total only) or per product (those
    inspected), and the total. Raises SQLAlchemy's errors."""
    buckets: dict[Any, YieldCounts] = {}
    if by == "hour":
        for start in hours(report.since, report.until, zone):
            buckets[start.astimezone(UTC)] = _hour_bucket(start, zone)
    elif by == "shift":
        for slot in shift_slots(report.since, report.until, shifts, zone):
            buckets[slot.key] = YieldCounts(slot.key, slot.start, slot.end)
    total = YieldCounts("total")
    for minute, product_id, anomalous, label, count in minute_counts(engine, report):
        total.add(anomalous, label, count)
        bucket = _bucket_of(buckets, by, minute, product_id, zone, shifts)
        if bucket is not None:
            bucket.add(anomalous, label, count)
    if by == "shift":
        return YieldReport(sorted(buckets.values(), key=lambda b: b.start), total)
    return YieldReport([buckets[key] for key in sorted(buckets)], total)


def _hour_bucket(start: datetime, zone: ZoneInfo) -> YieldCounts:
    end = (start.astimezone(UTC) + timedelta(hours=1)).astimezone(zone)  # an hour of real time, DST or not
    return YieldCounts(start.isoformat(), start, end)


def _bucket_of(
    buckets: dict[Any, YieldCounts],
    by: YieldBy,
    minute: datetime,
    product_id: str,
    zone: ZoneInfo,
    shifts: tuple[Shift, ...],
) -> YieldCounts | None:
    if by == "product":
        return buckets.setdefault(product_id, YieldCounts(product_id))
    if by == "hour":
        start = hour_start(minute, zone)  # keyed by its UTC time: the two 02:00 of a DST change back are two hours
        return buckets.setdefault(start.astimezone(UTC), _hour_bucket(start, zone))
    slot = shift_of(minute, shifts, zone)
    return None if slot is None else buckets.setdefault(slot.key, YieldCounts(slot.key, slot.start, slot.end))


def pareto(counts: Counter, cells: dict[str, tuple[int, int]] | None = None) -> list[ParetoEntry]:
    """Entries most frequent first (ties by name), with percent and cumulative percent of the counts' sum."""
    total = sum(counts.values())
    entries, running = [], 0
    for key, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        running += count
        row, col = (cells or {}).get(key, (None, None))
        entries.append(ParetoEntry(key, count, 100.0 * count / total, 100.0 * running / total, row, col))
    return entries


def rule_pareto(engine: Engine, report: ReportRange) -> ParetoReport:
    """The NG inspections by the rule that rejected them ("score" when the record names none). Raises SQLAlchemy's
    errors."""
    c = inspections.c
    rule = func.coalesce(c.rule, SCORE_ONLY).label("rule")
    query = select(rule, func.count().label("n")).where(report.clause(), c.anomalous).group_by(rule)
    with engine.connect() as connection:
        counts = Counter({row.rule: int(row.n) for row in connection.execute(query)})
    return ParetoReport(pareto(counts), sum(counts.values()))


def grid_cell(x: float, y: float, width: int, height: int, grid: int) -> tuple[int, int]:
    """The (row, col), 1-based from the top left, of the cell of a `grid` x `grid` split of a `width` x `height`
    frame that holds the point (x, y) in pixels. Cells hold their top and left edges: a point on the line between
    two cells is in the lower or right one; points on (or past) the frame's far edges are in the last cells."""
    col = min(grid - 1, max(0, int(x * grid // width)))
    row = min(grid - 1, max(0, int(y * grid // height)))
    return row + 1, col + 1


def frame_cells(regions: list[dict[str, Any]], width: int, height: int, grid: int) -> set[tuple[int, int]]:
    """The cells holding the centroid of at least one of an inspection's regions."""
    return {grid_cell(*r["centroid"], width, height, grid) for r in regions if r.get("centroid") is not None}


def rejected_regions(engine: Engine, report: ReportRange) -> Iterator[list[tuple[list[dict[str, Any]], int, int]]]:
    """(regions, width, height) of the range's NG inspections, in keyset batches of EXPORT_BATCH (oldest first)."""
    c = inspections.c
    after: tuple[datetime, str] | None = None
    while True:
        query = select(c.time, c.inspection_id, c.regions, c.width, c.height).where(report.clause(), c.anomalous)
        if after is not None:
            query = query.where(tuple_(c.time, c.inspection_id) > tuple_(*after))
        with engine.connect() as connection:
            rows = connection.execute(query.order_by(c.time, c.inspection_id).limit(EXPORT_BATCH)).all()
        if not rows:
            return
        yield [(row.regions or [], row.width, row.height) for row in rows]
        after = (rows[-1].time, rows[-1].inspection_id)


def region_pareto(engine: Engine, report: ReportRange, grid: int) -> ParetoReport:
    """The NG inspections by where their regions lie: each one counts once in every cell of a `grid` x `grid` split
    of its frame that holds a region's centroid (the listed regions: the largest-valued DCPSFR_MAX_REGIONS_LISTED).
    Raises SQLAlchemy's errors."""
    counts: Counter = Counter()
    cells: dict[str, tuple[int, int]] = {}
    ng = without = 0
    for batch in rejected_regions(engine, report):
        for regions, width, height in batch:
            ng += 1
            found = frame_cells(regions, width, height, grid)
            without += not found
            for row, col in found:
                key = f"R{row}C{col}"
                cells[key] = (row, col)
                counts[key] += 1
    return ParetoReport(pareto(counts, cells), ng, without)
