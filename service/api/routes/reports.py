"""Reports over the inspection records (operators may read them): first-pass yield and counts per hour, shift or
product, and the Pareto of the rejects by rule or by grid cell of the frame. The range defaults to the last 24 hours
(from the start of the hour 23 hours ago); this replica's spooled records are written first."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Query

from service.api.dependencies import Services, StoreServices
from service.api.errors import error_responses
from service.api.routes.inspections import DateTime
from service.api.schemas import ParetoEntryView, ParetoReportView, YieldBucket, YieldReportView, utc
from service.errors import InvalidInput
from service.imaging.formats import PRODUCT_ID
from service.records.reports import ReportRange, region_pareto, rule_pareto, yield_report
from service.records.shifts import parse_shifts, parse_timezone
from service.records.store import as_stored, records_call, utc_now

T = TypeVar("T")

router = APIRouter(prefix="/reports", tags=["reports"], responses=error_responses(401, 403, 422, 503))

MAX_RANGE = timedelta(days=92)  # bounds the hours of one answer (2208)
EARLIEST, LATEST = (
    datetime(1900, 1, 1),
    datetime(9999, 1, 1),
)  # local days and hours around them stay in datetime's range
ProductFilter = Annotated[str | None, Query(pattern=PRODUCT_ID.pattern, description="one product; none: all")]
Since = Annotated[DateTime | None, Query(description="ISO 8601, inclusive (no zone: UTC); default: until - 24 h")]
Until = Annotated[DateTime | None, Query(description="ISO 8601, exclusive (no zone: UTC); default: now")]


def report_range(since: datetime | None, until: datetime | None, product_id: str | None) -> ReportRange:
    """[since, until) as stored times; without `since`, the start of the hour 23 hours before `until` (24 hourly
    buckets). Raises InvalidInput (422) for an empty range, or one longer than MAX_RANGE."""
    try:
        end = utc_now() if until is None else as_stored(until)
        start = end.replace(minute=0, second=0, microsecond=0) - timedelta(hours=23) if since is None else since
        start = as_stored(start)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+05:00: before the first UTC time there is
        raise InvalidInput("since/until: out of range once converted to UTC") from None
    if start < EARLIEST or end > LATEST:
        raise InvalidInput(f"since/until: a report covers times from {EARLIEST.year} to {LATEST.year} only")
    if start >= end:
        raise InvalidInput(f"since ({utc(start).isoformat()}) must be before until ({utc(end).isoformat()})")
    if end - start > MAX_RANGE:
        raise InvalidInput(f"a report covers at most {MAX_RANGE.days} days; this range has {(end - start).days}")
    return ReportRange(start, end, product_id)


async def fresh_report(services: Services, report: Callable[..., T], *args: Any) -> T:
    """`report(engine, *args)` on the records database, off the event loop, once this replica's spooled records are
    written; Unavailable (503) when the database does not answer."""
    await asyncio.to_thread(services.recorder.flush)
    return await asyncio.to_thread(records_call, report, services.recorder.store.engine, *args)


@router.get("/yield", summary="First-pass yield and counts per hour, shift or product")
async def yield_by(
    services: StoreServices,
    since: Since = None,
    until: Until = None,
    product_id: ProductFilter = None,
    by: Annotated[Literal["hour", "shift", "product"], Query(description="the buckets")] = "hour",
) -> YieldReportView:
    """Inspected, OK, NG, reviewed, false rejects and escapes per local hour (DCPSFR_TIMEZONE), per shift
    (DCPSFR_SHIFTS) or per product; first-pass yield = OK / inspected. 422 a bad or empty range (at most 92
    days), 503 the records database does not answer."""
    window = report_range(since, until, product_id)
    settings = services.settings
    zone, shifts = parse_timezone(settings.timezone), parse_shifts(settings.shifts)
    report = await fresh_report(services, yield_report, window, by, zone, shifts)
    return YieldReportView(
        since=utc(window.since),
        until=utc(window.until),
        product_id=product_id,
        by=by,
        timezone=settings.timezone,
        buckets=[YieldBucket.of(b) for b in report.buckets],
        total=YieldBucket.of(report.total),
    )


@router.get("/pareto", summary="The rejects by rule or by where in the frame")
async def pareto_by(
    services: StoreServices,
    since: Since = None,
    until: Until = None,
    product_id: ProductFilter = None,
    by: Annotated[Literal["rule", "region"], Query(description="the cause: the rule, or the grid cell")] = "rule",
    grid: Annotated[int, Query(ge=1, le=16, description="by=region: the frame split in grid x grid cells")] = 4,
) -> ParetoReportView:
    """The NG inspections by the rule that rejected them ("score": the score alone), or by the cells of a grid x grid
    split of the frame holding their regions' centroids (an inspection counts once per cell); the most frequent
    first, with percent and cumulative percent. 422 a bad or empty range, 503 the records database does not
    answer."""
    window = report_range(since, until, product_id)
    if by == "rule":
        report = await fresh_report(services, rule_pareto, window)
    else:
        report = await fresh_report(services, region_pareto, window, grid)
    return ParetoReportView(
        since=utc(window.since),
        until=utc(window.until),
        product_id=product_id,
        by=by,
        grid=grid if by == "region" else None,
        ng=report.ng,
        without_region=report.without_region if by == "region" else None,
        entries=[ParetoEntryView(**vars(entry)) for entry in report.entries],
    )
