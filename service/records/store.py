"""Reads and writes of the records tables: batched idempotent inserts, one record, filtered pages newest first with
a keyset cursor, the rows of an export in bounded batches, reviews and the review queue (oldest first), retention
and review policies, and the archive's pruning.
Every call may raise SQLAlchemy's errors (the database is down or refuses); callers decide what that means."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Engine, Table, and_, func, insert, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from service.errors import Unavailable
from service.records.archive import RetentionPolicy
from service.records.review import PENDING, REVIEWED, ReviewPolicy
from service.records.tables import inspections, retention, review_policy, reviews

T = TypeVar("T")
EXPORT_BATCH = 1000  # rows read per query while exporting


def utc_now() -> datetime:
    """Now, UTC, without a zone: how the tables store times."""
    return datetime.now(UTC).replace(tzinfo=None)


def as_stored(time: datetime) -> datetime:
    """A time as the tables store it: UTC without a zone (a naive time is taken as UTC)."""
    return time if time.tzinfo is None else time.astimezone(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class RecordFilter:
    """What GET /inspections selects; None: any."""

    product_id: str | None = None
    anomalous: bool | None = None
    part_id: str | None = None
    station: str | None = None
    rule: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive

    def clause(self) -> Any:
        """The WHERE clause."""
        equal = ("product_id", "anomalous", "part_id", "station", "rule")
        return where(inspections.c, {name: getattr(self, name) for name in equal}, self.since, self.until)


def where(columns: Any, equal: dict[str, Any], since: datetime | None, until: datetime | None) -> Any:
    """A WHERE clause: each column of `equal` whose value is not None equals it, and `time` in [since, until)."""
    parts = [columns[name] == value for name, value in equal.items() if value is not None]
    parts += [columns.time >= as_stored(since)] if since is not None else []
    parts += [columns.time < as_stored(until)] if until is not None else []
    return and_(True, *parts)


def records_call(call: Callable[..., T], *args: Any) -> T:
    """`call(*args)`, a database failure raised as Unavailable (503: the records database does not answer)."""
    try:
        return call(*args)
    except SQLAlchemyError as err:
        raise Unavailable(f"the records database does not answer: {str(err).splitlines()[0]}", 5.0) from err


class BadCursor(ValueError):
    """A cursor this service did not hand out."""


EPOCH = datetime(1970, 1, 1)
CURSOR_PATTERN = r"^[0-9]{17}[0-9a-f]{32}$"  # every text it matches is a cursor (the schema says it all)


def encode_cursor(time: datetime, inspection_id: str) -> str:
    """The cursor after the record (time, id): 17 digits of microseconds since 1970 (UTC), then the id."""
    microseconds = (time - EPOCH) // timedelta(microseconds=1)
    return f"{microseconds:017d}{inspection_id}"


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """(time, id) of a cursor; raises BadCursor when it does not match CURSOR_PATTERN."""
    if re.fullmatch(CURSOR_PATTERN, cursor) is None:
        raise BadCursor(f"not a cursor of GET /inspections: {cursor!r}")
    return EPOCH + timedelta(microseconds=int(cursor[:17])), cursor[17:]


def _after(cursor: tuple[datetime, str] | None, oldest_first: bool = False) -> Any:
    if cursor is None:
        return True
    key, after = tuple_(inspections.c.time, inspections.c.inspection_id), tuple_(*cursor)
    return key > after if oldest_first else key < after  # a row value: the (time, id) index serves it


def _not_pending() -> Any:
    """Records not waiting for review (their frames may be pruned; a pending one's stays for the reviewer)."""
    c = inspections.c
    return or_(c.review.is_(None), c.review != PENDING)


def _upsert(connection: Any, table: Table, product_id: str, values: dict[str, Any]) -> None:
    """Set (or replace) a product's row of a per-product policy table."""
    found = connection.execute(
        update(table).where(table.c.product_id == product_id).values(**values, updated=utc_now())
    )
    if found.rowcount == 0:
        connection.execute(insert(table), [{"product_id": product_id, **values, "updated": utc_now()}])


def _insert_ignoring_duplicates(engine: Engine, table: Any) -> Any:
    if engine.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if engine.dialect.name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    return insert(table)


class RecordStore:
    """The records database behind one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def insert(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert records in one transaction; a record whose id is there already is skipped (a spool segment
        inserted twice after a crash)."""
        if rows:
            with self.engine.begin() as connection:
                connection.execute(_insert_ignoring_duplicates(self.engine, inspections), list(rows))

    def get(self, inspection_id: str) -> dict[str, Any] | None:
        """One record with its latest label (and who gave it, when), None when there is none."""
        with self.engine.connect() as connection:
            row = connection.execute(select(inspections).where(inspections.c.inspection_id == inspection_id)).first()
            if row is None:
                return None
            return self._labelled(connection, [row._asdict()])[0]

    def page(
        self, where: RecordFilter, limit: int, cursor: tuple[datetime, str] | None = None, thumbnails: bool = False
    ) -> tuple[list[dict[str, Any]], tuple[datetime, str] | None]:
        """Up to `limit` records newest first after `cursor`, with their labels (and thumbnails when asked: about 5 kB
        each), and the cursor of the next page (None after the last)."""
        c = inspections.c
        columns = [column for column in inspections.c if thumbnails or column.name != "thumbnail"]
        query = (
            select(*columns)
            .where(where.clause(), _after(cursor))
            .order_by(c.time.desc(), c.inspection_id.desc())
            .limit(limit + 1)
        )
        with self.engine.connect() as connection:
            rows = [r._asdict() for r in connection.execute(query)]
            more = len(rows) > limit
            rows = self._labelled(connection, rows[:limit])
        last = rows[-1] if more else None
        return rows, (last["time"], last["inspection_id"]) if last else None

    def export(self, where: RecordFilter) -> Iterator[list[dict[str, Any]]]:
        """Every matching record newest first, in batches of EXPORT_BATCH (one short query each: memory stays bounded
        whatever the count, and no transaction stays open between batches)."""
        cursor = None
        while True:
            rows, cursor = self.page(where, EXPORT_BATCH, cursor)
            if rows:
                yield rows
            if cursor is None:
                return

    def _labelled(self, connection: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        ids = [r["inspection_id"] for r in rows]
        latest: dict[str, dict[str, Any]] = {}
        if ids:
            v = reviews.c
            query = select(v.inspection_id, v.label, v.author, v.time).where(v.inspection_id.in_(ids))
            for inspection_id, label, author, time in connection.execute(query.order_by(v.review_id)):
                latest[inspection_id] = {"label": label, "reviewed_by": author, "reviewed_at": time}  # the latest wins
        none = {"label": None, "reviewed_by": None, "reviewed_at": None}
        return [{**r, **latest.get(r["inspection_id"], none)} for r in rows]

    def add_review(
        self, inspection_id: str, product_id: str, label: str, author: str | None = None, source: str = "feedback"
    ) -> None:
        """Record an operator's label on an inspection (who: `author`, the API key's name; when: now); a record
        waiting in the review queue leaves it, in the same transaction."""
        row = {"inspection_id": inspection_id, "product_id": product_id, "label": label, "source": source}
        c = inspections.c
        with self.engine.begin() as connection:
            connection.execute(insert(reviews), [{**row, "author": author, "time": utc_now()}])
            done = update(inspections).where(c.inspection_id == inspection_id, c.review == PENDING)
            connection.execute(done.values(review=REVIEWED))

    def reviews_of(self, inspection_id: str) -> list[dict[str, Any]]:
        """Every label given to an inspection, oldest first (who, when, what, from where)."""
        query = select(reviews).where(reviews.c.inspection_id == inspection_id).order_by(reviews.c.review_id)
        with self.engine.connect() as connection:
            return [r._asdict() for r in connection.execute(query)]

    # --- the review queue -----------------------------------------------------------------------------------

    def review_queue(
        self, product_id: str | None, limit: int, cursor: tuple[datetime, str] | None = None
    ) -> tuple[list[dict[str, Any]], tuple[datetime, str] | None, int]:
        """Up to `limit` records waiting for review (all products', or one's), oldest first after `cursor`, with
        thumbnails; the cursor of the next page (None after the last) and how many wait in all."""
        c = inspections.c
        waiting = and_(c.review == PENDING, c.product_id == product_id if product_id is not None else True)
        query = (
            select(inspections)
            .where(waiting, _after(cursor, oldest_first=True))
            .order_by(c.time, c.inspection_id)
            .limit(limit + 1)
        )
        with self.engine.connect() as connection:
            rows = [r._asdict() for r in connection.execute(query)]
            pending = connection.execute(select(func.count()).select_from(inspections).where(waiting)).scalar_one()
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1] if more else None
        return rows, (last["time"], last["inspection_id"]) if last else None, pending

    def review_policies(self) -> dict[str, ReviewPolicy]:
        """Every product's own review policy (products without one follow the settings)."""
        with self.engine.connect() as connection:
            rows = connection.execute(select(review_policy)).all()
        return {r.product_id: ReviewPolicy(r.band, r.all_ng) for r in rows}

    def set_review_policy(self, product_id: str, policy: ReviewPolicy) -> None:
        """Set (or replace) the product's review policy."""
        with self.engine.begin() as connection:
            _upsert(connection, review_policy, product_id, {"band": policy.band, "all_ng": policy.all_ng})

    # --- retention ------------------------------------------------------------------------------------------

    def policies(self) -> dict[str, RetentionPolicy]:
        """Every product's own retention policy (products without one follow the settings)."""
        with self.engine.connect() as connection:
            rows = connection.execute(select(retention)).all()
        return {r.product_id: RetentionPolicy(r.keep_ng, r.keep_ok_every, r.days) for r in rows}

    def set_policy(self, product_id: str, policy: RetentionPolicy) -> None:
        """Set (or replace) the product's retention policy."""
        values = {"keep_ng": policy.keep_ng, "keep_ok_every": policy.keep_ok_every, "days": policy.days}
        with self.engine.begin() as connection:
            _upsert(connection, retention, product_id, values)

    def expire_frames(self, policies: dict[str, RetentionPolicy], default: RetentionPolicy, now: datetime) -> int:
        """Mark the frames past their product's `days` as no longer kept (but a record's waiting for review);
        returns how many."""
        c = inspections.c
        expired = 0
        with self.engine.begin() as connection:
            for product_id, policy in policies.items():
                cutoff = now - timedelta(days=policy.days)
                query = update(inspections).where(
                    c.product_id == product_id, c.frame_kept, c.time < cutoff, _not_pending()
                )
                expired += connection.execute(query.values(frame_kept=False)).rowcount
            others = c.product_id.not_in(list(policies)) if policies else True
            cutoff = now - timedelta(days=default.days)
            query = update(inspections).where(others, c.frame_kept, c.time < cutoff, _not_pending())
            expired += connection.execute(query.values(frame_kept=False)).rowcount
        return expired

    def cap_frames(self, max_bytes: int) -> int:
        """Mark the oldest kept frames as no longer kept until the kept ones take at most `max_bytes`; returns how
        many (a frame kept by several records counts once per record: a conservative bound). Frames waiting for
        review are never dropped: the others go first."""
        c = inspections.c
        with self.engine.begin() as connection:
            total = connection.execute(select(func.coalesce(func.sum(c.frame_bytes), 0)).where(c.frame_kept)).scalar()
            excess, dropped = int(total) - max_bytes, []
            if excess <= 0:
                return 0
            droppable = and_(c.frame_kept, _not_pending())
            oldest = select(c.inspection_id, c.frame_bytes).where(droppable).order_by(c.time, c.inspection_id)
            for inspection_id, size in connection.execute(oldest):
                dropped.append(inspection_id)
                excess -= size or 0
                if excess <= 0:
                    break
            for start in range(0, len(dropped), 500):
                chunk = dropped[start : start + 500]
                connection.execute(update(inspections).where(c.inspection_id.in_(chunk)).values(frame_kept=False))
        return len(dropped)

    def unreferenced(self, hashes: Sequence[str]) -> list[str]:
        """The hashes among `hashes` that no record keeps any more (their files may go)."""
        c = inspections.c
        with self.engine.connect() as connection:
            query = select(c.frame_sha256).where(c.frame_kept, c.frame_sha256.in_(list(hashes))).distinct()
            kept = set(connection.execute(query).scalars())
        return [h for h in hashes if h not in kept]
