"""The audit log: one row per change (references, calibration, thresholds, rules, retention, review policy, product
delete, feedback) with who made it (the API key's name), when, and small before/after values; read newest first in
cursor pages, or every matching row in bounded batches for the JSON-lines export."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, insert, select

from service.records.store import EXPORT_BATCH, utc_now, where
from service.records.tables import audit

ACTIONS = (
    "references.upload",  # a new reference version (after: version, images)
    "calibration.add",  # calibration frames added (after: thresholds, frame count)
    "feedback",  # an operator's label (after: label, inspection id, thresholds)
    "threshold.set",  # a manual threshold (before/after: thresholds)
    "rules.set",  # acceptance rules replaced (before/after: rules, version)
    "rules.delete",
    "retention.set",  # the archive's policy (before/after: keep_ng, keep_ok_every, days)
    "review_policy.set",  # which inspections wait for review (before/after: band, all_ng)
    "product.delete",  # (before: version, thresholds)
)


@dataclass(frozen=True)
class AuditFilter:
    """What GET /audit selects; None: any."""

    product_id: str | None = None
    actor: str | None = None
    action: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive

    def clause(self) -> Any:
        """The WHERE clause."""
        equal = {"product_id": self.product_id, "actor": self.actor, "action": self.action}
        return where(audit.c, equal, self.since, self.until)


class AuditLog:
    """The audit table's reads and writes; every call may raise SQLAlchemy's errors."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def append(self, actor: str, action: str, product_id: str, before: Any = None, after: Any = None) -> None:
        """Write one row now (its own transaction); `before`/`after` are JSON-serialisable and small."""
        assert action in ACTIONS, action
        row = {"time": utc_now(), "actor": actor, "action": action, "product_id": product_id}
        with self.engine.begin() as connection:
            connection.execute(insert(audit), [{**row, "before": before, "after": after}])

    def page(
        self, where: AuditFilter, limit: int, after_id: int | None = None
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Up to `limit` rows newest first (by audit_id) below `after_id`, and the cursor of the next page (None
        after the last)."""
        query = select(audit).where(where.clause()).order_by(audit.c.audit_id.desc()).limit(limit + 1)
        if after_id is not None:
            query = query.where(audit.c.audit_id < after_id)
        with self.engine.connect() as connection:
            rows = [r._asdict() for r in connection.execute(query)]
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, rows[-1]["audit_id"] if more else None

    def export(self, where: AuditFilter) -> Iterator[list[dict[str, Any]]]:
        """Every matching row newest first, in batches of EXPORT_BATCH (memory bounded, no transaction held)."""
        cursor = None
        while True:
            rows, cursor = self.page(where, EXPORT_BATCH, cursor)
            if rows:
                yield rows
            if cursor is None:
                return
