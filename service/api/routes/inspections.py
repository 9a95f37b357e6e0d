"""The inspection records: filtered pages newest first (cursor pagination), the same query as a streamed CSV export,
the review queue (oldest first), one record, its archived frame. Every replica answers from the shared records;
this replica's spooled records are written first, so that an inspection it answered is listed at once."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response, StreamingResponse
from pydantic import BeforeValidator

from service.api.dependencies import StoreServices
from service.api.errors import error_responses
from service.api.schemas import InspectionPage, InspectionRecord, ReviewItem, ReviewQueue, utc
from service.errors import InvalidInput, NotFound
from service.imaging.formats import PRODUCT_ID, TAG_TEXT
from service.records.store import (
    CURSOR_PATTERN,
    BadCursor,
    RecordFilter,
    RecordStore,
    as_stored,
    decode_cursor,
    encode_cursor,
    records_call,
)

router = APIRouter(prefix="/inspections", tags=["inspections"], responses=error_responses(401, 403, 503))

InspectionId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="32 hex digits, from POST /inspect")]
Text = Annotated[str | None, Query(pattern=TAG_TEXT, description="as sent to POST /inspect")]
RULE_NAME = r"^[a-z_]{1,64}$"
ISO_DATE_TIME = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d")


def _date_time_text(value: object) -> object:
    """An ISO 8601 date-time as the schema's `date-time` says: text with a date and a time (pydantic alone also
    reads numbers as Unix times and a bare date as midnight)."""
    if not isinstance(value, str) or ISO_DATE_TIME.match(value) is None:
        raise ValueError("must be an ISO 8601 date-time, e.g. 2026-03-01T06:00:00Z")
    return value


DateTime = Annotated[datetime, BeforeValidator(_date_time_text)]
CSV_COLUMNS = [
    "inspection_id", "time", "product_id", "reference_version", "verdict", "score", "score_scale", "threshold",
    "pixel_threshold", "threshold_source", "rules_version", "rule", "rules_fired", "n_regions", "part_id",
    "station", "camera", "view", "trigger_time", "latency_ms", "total_ms", "timings_ms", "warnings", "model_config",
    "mode", "weights_checksum", "filename", "width", "height", "frame_sha256", "frame_kept", "label", "review",
    "replica",
]  # fmt: skip


def record_filter(
    product_id: Annotated[str | None, Query(pattern=PRODUCT_ID.pattern)] = None,
    verdict: Annotated[Literal["OK", "NG"] | None, Query(description="OK (passed) or NG (rejected)")] = None,
    part_id: Text = None,
    station: Text = None,
    rule: Annotated[str | None, Query(pattern=RULE_NAME, description='the rule that fired, e.g. "threshold"')] = None,
    since: Annotated[DateTime | None, Query(description="ISO 8601, inclusive (no zone: UTC)")] = None,
    until: Annotated[DateTime | None, Query(description="ISO 8601, exclusive (no zone: UTC)")] = None,
) -> RecordFilter:
    """The query's filters."""
    anomalous = None if verdict is None else verdict == "NG"
    try:
        since, until = (None if t is None else as_stored(t) for t in (since, until))
    except OverflowError:  # e.g. 0001-01-01T00:00:00+05:00: before the first UTC time there is
        raise InvalidInput("since/until: out of range once converted to UTC") from None
    return RecordFilter(product_id, anomalous, part_id, station, rule, since, until)


@router.get(
    "",
    summary="Inspection records, newest first",
    response_model=InspectionPage,
    responses={
        200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "a page, or the CSV export"},
        **error_responses(422),
    },
)
async def list_inspections(
    services: StoreServices,
    where: Annotated[RecordFilter, Depends(record_filter)],
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN, description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    format: Annotated[Literal["json", "csv"], Query(description="csv: every matching record, streamed")] = "json",
) -> Response:
    """Filtered by product, verdict, part id, station, rule and time; `format=csv` exports every matching record
    (cursor and limit do not apply), streamed. 422 a bad filter or cursor, 503 the records database does not
    answer."""
    recorder = services.recorder
    await asyncio.to_thread(recorder.flush)
    if format == "csv":
        await asyncio.to_thread(records_call, recorder.store.page, where, 1)  # fail with 503 before streaming
        headers = {"Content-Disposition": 'attachment; filename="inspections.csv"'}
        return StreamingResponse(csv_chunks(recorder.store, where), media_type="text/csv", headers=headers)
    rows, next_after = await asyncio.to_thread(records_call, recorder.store.page, where, limit, _cursor(cursor))
    page = InspectionPage(
        inspections=[InspectionRecord.of(r) for r in rows],
        next_cursor=None if next_after is None else encode_cursor(*next_after),
    )
    return Response(page.model_dump_json().encode(), media_type="application/json")


def _cursor(cursor: str | None) -> tuple[datetime, str] | None:
    try:
        return None if cursor is None else decode_cursor(cursor)
    except BadCursor as err:
        raise InvalidInput(str(err)) from None


@router.get(
    "/review-queue",
    summary="Inspections waiting for a person's verdict, oldest first",
    responses=error_responses(422),
)
async def review_queue(
    services: StoreServices,
    product_id: Annotated[str | None, Query(pattern=PRODUCT_ID.pattern)] = None,
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN, description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> ReviewQueue:
    """Every replica's inspections that the product's review policy sent to the queue and nobody has labelled yet,
    oldest first (the longest waiting; a page stays put while new ones arrive), with `pending`, how many wait in all.
    The verdict is feedback: POST /products/{id}/feedback with `inspection_id` and `label` takes it out. 422 a bad
    cursor, 503 the records database does not answer."""
    recorder = services.recorder
    await asyncio.to_thread(recorder.flush)
    after = _cursor(cursor)
    rows, next_after, pending = await asyncio.to_thread(
        records_call, recorder.store.review_queue, product_id, limit, after
    )
    return ReviewQueue(
        pending=pending,
        items=[ReviewItem.of(r) for r in rows],
        next_cursor=None if next_after is None else encode_cursor(*next_after),
    )


def csv_chunks(store: RecordStore, where: RecordFilter) -> Iterator[str]:
    """The CSV export: the header, then one chunk per batch of records (memory bounded by the batch, whatever the
    count). Starlette runs this iterator in its thread pool."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for rows in store.export(where):
        for row in rows:
            writer.writerow(csv_row(row))
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue()


def csv_row(record: dict[str, Any]) -> list[Any]:
    """One record's CSV cells, as InspectionRecord shows them: times ISO 8601 UTC, lists and mappings as JSON, null
    as an empty cell (built directly: a model per row would take most of a large export's time)."""
    view = {**record, "verdict": "NG" if record["anomalous"] else "OK"}
    for key in ("time", "trigger_time"):
        if view[key] is not None:
            view[key] = utc(view[key]).isoformat()
    return [json.dumps(v) if isinstance(v, list | dict) else "" if v is None else v for v in map(view.get, CSV_COLUMNS)]


@router.get("/{inspection_id}", summary="One inspection record", responses=error_responses(404, 422))
async def show_inspection(inspection_id: InspectionId, services: StoreServices) -> InspectionRecord:
    """404 when there is no such record; 503 the records database does not answer."""
    record = await asyncio.to_thread(services.workflows.record, inspection_id)
    if record is None:
        raise NotFound(f"no inspection {inspection_id!r}")
    return InspectionRecord.of(record)


@router.get(
    "/{inspection_id}/frame",
    summary="The archived frame of an inspection",
    response_class=Response,
    responses={
        200: {
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            "description": "the uploaded file, as it was sent",
        },
        **error_responses(404, 422),
    },
)
async def inspection_frame(inspection_id: InspectionId, services: StoreServices) -> Response:
    """The file as uploaded; 404 no such record, or its frame is not (or no longer) kept by the retention policy."""
    record = await asyncio.to_thread(services.workflows.record, inspection_id)
    if record is None:
        raise NotFound(f"no inspection {inspection_id!r}")
    data = None
    if record["frame_kept"]:
        data = await asyncio.to_thread(services.recorder.frame, record["frame_sha256"])
    if data is None:
        raise NotFound(f"the frame of inspection {inspection_id!r} is not kept (the product's retention policy)")
    headers = {"Content-Disposition": f'inline; filename="{inspection_id}"'}
    return Response(data, media_type="application/octet-stream", headers=headers)
