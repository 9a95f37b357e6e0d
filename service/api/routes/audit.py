"""The audit log (admins only, service.api.paths.ROLE_RULES): who changed what and when, filtered, newest first in
cursor pages, or every matching change as streamed JSON lines."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response, StreamingResponse

from service.api.dependencies import StoreServices
from service.api.errors import error_responses
from service.api.routes.inspections import DateTime
from service.api.schemas import AuditEntry, AuditPage
from service.errors import InvalidInput
from service.imaging.formats import PRODUCT_ID
from service.keys import NAME
from service.records.audit import ACTIONS, AuditFilter, AuditLog
from service.records.store import as_stored, records_call

router = APIRouter(prefix="/audit", tags=["audit"], responses=error_responses(401, 403, 503))

AUDIT_CURSOR = r"^[0-9]{1,18}$"


@router.get(
    "",
    summary="The audit log of changes, newest first",
    response_model=AuditPage,
    responses={
        200: {
            "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
            "description": "a page, or the JSON-lines export",
        },
        **error_responses(422),
    },
)
async def list_audit(
    services: StoreServices,
    product_id: Annotated[str | None, Query(pattern=PRODUCT_ID.pattern)] = None,
    actor: Annotated[str | None, Query(pattern=NAME.pattern, description="an API key's name, or anonymous")] = None,
    action: Annotated[Literal[ACTIONS] | None, Query(description="what changed")] = None,  # type: ignore[valid-type]
    since: Annotated[DateTime | None, Query(description="ISO 8601, inclusive (no zone: UTC)")] = None,
    until: Annotated[DateTime | None, Query(description="ISO 8601, exclusive (no zone: UTC)")] = None,
    cursor: Annotated[str | None, Query(pattern=AUDIT_CURSOR, description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    format: Annotated[Literal["json", "jsonl"], Query(description="jsonl: every matching change, streamed")] = "json",
) -> Response:
    """Filtered by product, actor, action and time; `format=jsonl` exports every matching change, one JSON object
    (an AuditEntry) a line (cursor and limit do not apply). 422 a bad filter, 503 the records database does not
    answer."""
    try:
        since, until = (None if t is None else as_stored(t) for t in (since, until))
    except OverflowError:  # e.g. 0001-01-01T00:00:00+05:00: before the first UTC time there is
        raise InvalidInput("since/until: out of range once converted to UTC") from None
    where = AuditFilter(product_id, actor, action, since, until)
    log = services.recorder.audit
    if format == "jsonl":
        await asyncio.to_thread(records_call, log.page, where, 1)  # fail with 503 before streaming
        headers = {"Content-Disposition": 'attachment; filename="audit.jsonl"'}
        return StreamingResponse(jsonl_chunks(log, where), media_type="application/x-ndjson", headers=headers)
    after_id = None if cursor is None else int(cursor)
    rows, next_id = await asyncio.to_thread(records_call, log.page, where, limit, after_id)
    page = AuditPage(entries=[AuditEntry.of(r) for r in rows], next_cursor=None if next_id is None else str(next_id))
    return Response(page.model_dump_json().encode(), media_type="application/json")


def jsonl_chunks(log: AuditLog, where: AuditFilter) -> Iterator[str]:
    """One chunk per batch of rows, each row an AuditEntry's JSON on its own line (Starlette runs this iterator in
    its thread pool)."""
    for rows in log.export(where):
        yield "".join(AuditEntry.of(row).model_dump_json() + "\n" for row in rows)
