"""The record writer: every inspected frame's record goes to the local spool on the request path (one write), and a
background thread seals the spool, writes the archived frames, inserts the records in batches, and prunes the
archive. A slow or unreachable database delays only this thread: records wait in the spool (on disk) and frames in
the archive, and both are caught up when the database answers again."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

from service.records.archive import FrameArchive, RetentionPolicy, sha256_hex
from service.records.audit import AuditLog
from service.records.database import SchemaTooNew, migrate
from service.records.review import DEFAULT_REVIEW, PENDING, ReviewPolicy
from service.records.spool import Spool, read_segment
from service.records.store import RecordStore, utc_now

log = logging.getLogger(__name__)

INSERT_BATCH = 500  # records per INSERT
RETRY_MAX_S = 5.0  # longest wait between tries while the database is down
POLICY_REFRESH_S = 10.0  # how often another replica's retention or review policy change is picked up
REJECTED_FILE = "rejected.jsonl"  # records the database refused (never expected): kept for a person
PRUNE_GRACE_S = 3600.0  # an archive file younger than this is never pruned (its record may still be in a spool)


@dataclass(frozen=True)
class RecorderSettings:
    """The settings the recorder follows."""

    flush_s: float  # DCPSFR_RECORDS_FLUSH_S
    default_policy: RetentionPolicy  # DCPSFR_ARCHIVE_KEEP_NG, _KEEP_OK_EVERY, _DAYS
    max_archive_bytes: int  # DCPSFR_ARCHIVE_MAX_BYTES
    prune_s: float  # DCPSFR_ARCHIVE_PRUNE_S
    default_review: ReviewPolicy = DEFAULT_REVIEW  # DCPSFR_REVIEW_BAND, _ALL_NG


class Recorder:
    """Spool, writer thread and archive of one process."""

    def __init__(self, engine: Engine, spool_dir: Path, archive: FrameArchive, settings: RecorderSettings) -> None:
        self.store = RecordStore(engine)
        self.audit = AuditLog(engine)
        self.archive = archive
        self.settings = settings
        self.spool_dir = spool_dir
        self.spool: Spool | None = None
        self.migrated = False
        self.error: str | None = None  # the last database failure, None while it answers
        self._policies: dict[str, RetentionPolicy] = {}
        self._review_policies: dict[str, ReviewPolicy] = {}
        self._policies_read = 0.0
        self._ok_seen: dict[str, int] = {}
        self._frames: dict[str, bytes] = {}  # frames to archive, by sha256 (written by the thread)
        self._frames_lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one flush at a time: the writer thread's or a reader's
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_prune = time.monotonic()

    # --- the request path -----------------------------------------------------------------------------------

    def policy(self, product_id: str) -> RetentionPolicy:
        """The product's retention policy (its own, else the settings')."""
        return self._policies.get(product_id, self.settings.default_policy)

    def review_policy(self, product_id: str) -> ReviewPolicy:
        """The product's review policy (its own, else the settings')."""
        return self._review_policies.get(product_id, self.settings.default_review)

    def record(self, row: dict[str, Any], frame: bytes | None) -> dict[str, Any]:
        """Spool one record (the tables' columns, less the frame's and the review's, which this fills from `frame`
        and the product's policies: a record that goes to the review queue keeps its frame, whatever the retention
        policy samples); the frame is archived by the writer thread. Returns the row as spooled. Raises OSError when
        the spool's disk fails (the caller logs it: the inspection's answer stands)."""
        policy = self.review_policy(row["product_id"])
        pending = policy.needs_review(row["score"], row["threshold"], row["anomalous"], row["score_scale"])
        sampled = frame is not None and self._keeps(row["product_id"], row["anomalous"])
        keep = frame is not None and (sampled or pending)
        sha256 = sha256_hex(frame) if keep else None
        row = {**row, "frame_sha256": sha256, "frame_bytes": len(frame) if keep else None, "frame_kept": keep}
        row["review"] = PENDING if pending else None
        if keep:
            with self._frames_lock:
                self._frames[sha256] = frame
        if self.spool is None:
            raise OSError(self.error or "the records spool is not open")
        self.spool.append(row)
        return row

    def _keeps(self, product_id: str, anomalous: bool) -> bool:
        if anomalous:
            return self.policy(product_id).keeps(True, 0)
        seen = self._ok_seen.get(product_id, 0)
        self._ok_seen[product_id] = seen + 1
        return self.policy(product_id).keeps(False, seen)

    def frame(self, sha256: str) -> bytes | None:
        """An archived frame, or one still waiting for the writer; None when neither."""
        with self._frames_lock:
            waiting = self._frames.get(sha256)
        return waiting if waiting is not None else self.archive.get(sha256)

    def set_policy(self, product_id: str, policy: RetentionPolicy) -> None:
        """Store the product's retention policy (this replica follows it at once, others within POLICY_REFRESH_S)."""
        self.store.set_policy(product_id, policy)
        self._policies = {**self._policies, product_id: policy}

    def set_review_policy(self, product_id: str, policy: ReviewPolicy) -> None:
        """Store the product's review policy (this replica follows it at once, others within POLICY_REFRESH_S)."""
        self.store.set_review_policy(product_id, policy)
        self._review_policies = {**self._review_policies, product_id: policy}

    # --- the writer thread ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Open the spool and start the writer thread (the database is migrated there, and retried until it
        answers). Raises SchemaTooNew when the database's schema is newer than this code. A spool folder that cannot
        be made (an unusable data dir) is logged: inspections then go unrecorded (counted) until a restart."""
        try:
            self.spool = Spool(self.spool_dir)
        except OSError as err:
            self.error = f"the records spool {self.spool_dir} cannot be opened: {err}"
            log.error("%s; inspections are not recorded", self.error)
            return
        try:
            self._migrate()
        except SchemaTooNew:
            self.spool.close()
            raise
        except SQLAlchemyError as err:
            self._failed(err)  # inspections go on; the thread retries
        self._thread = threading.Thread(target=self._run, name="records-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Flush what can be flushed within `timeout_s`, then close the spool (what is left waits on disk)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():  # the database hangs: the spool stays; the next process adopts it
                log.warning(
                    "the records writer did not finish in %.0f s; the spool waits for the next start", timeout_s
                )
                return
        if self.spool is not None:
            self._write_frames()
            self.spool.close()
            self.spool = None

    def flush(self) -> bool:
        """Seal the spool, archive the waiting frames and insert every sealed segment; True when the spool is empty
        after it (False: the database failed, see `error`)."""
        if self.spool is None:
            return False
        with self._flush_lock:
            self.spool.seal()
            self._write_frames()
            try:
                self._migrate()
                self._refresh_policies()
                for segment in self.spool.sealed():
                    self._insert(segment)
            except SQLAlchemyError as err:
                self._failed(err)
                return False
        if self.error is not None:
            log.warning("the records database answers again; the spooled records are written")
            self.error = None
        return True

    def _run(self) -> None:
        delay = self.settings.flush_s
        while not self._stopping.is_set():
            self._wake.wait(delay)
            self._wake.clear()
            try:
                delay = self.settings.flush_s if self.flush() else min(RETRY_MAX_S, max(delay * 2, 0.5))
                if self.error is None and time.monotonic() - self._last_prune >= self.settings.prune_s:
                    self.prune()
            except Exception:
                log.exception("the records writer failed; retrying")
                delay = RETRY_MAX_S
        self.flush()

    def _migrate(self) -> None:
        if not self.migrated:
            migrate(self.store.engine)
            self.migrated = True

    def _refresh_policies(self, force: bool = False) -> None:
        if force or time.monotonic() - self._policies_read >= POLICY_REFRESH_S:
            self._policies = self.store.policies()
            self._review_policies = self.store.review_policies()
            self._policies_read = time.monotonic()

    def _failed(self, err: SQLAlchemyError) -> None:
        message = str(err).splitlines()[0]
        if self.error is None:
            log.warning(
                "the records database does not answer (%s); records wait in the spool %s", message, self.spool_dir
            )
        self.error = message

    def _write_frames(self) -> None:
        with self._frames_lock:
            waiting = list(self._frames.items())
        for sha256, data in waiting:
            try:
                self.archive.put(data)
            except OSError as err:
                log.warning("the frame archive could not store a frame: %s", err)
            with self._frames_lock:
                self._frames.pop(sha256, None)

    def _insert(self, segment: Path) -> None:
        rows = [self._row(record) for record in read_segment(segment)]
        for start in range(0, len(rows), INSERT_BATCH):
            batch = rows[start : start + INSERT_BATCH]
            try:
                self.store.insert(batch)
            except (IntegrityError, DataError):  # a record the database refuses must not hold up the others
                self._insert_one_by_one(batch)
        segment.unlink(missing_ok=True)

    def _insert_one_by_one(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            try:
                self.store.insert([row])
            except (IntegrityError, DataError) as err:
                with (self.spool_dir / REJECTED_FILE).open("a") as handle:
                    handle.write(json.dumps(row, default=str) + "\n")
                log.error(
                    "the records database refused inspection %s (%s); kept in %s",
                    row.get("inspection_id"),
                    str(err).splitlines()[0],
                    self.spool_dir / REJECTED_FILE,
                )

    def _row(self, record: dict[str, Any]) -> dict[str, Any]:
        """A spooled record as a table row: times parsed; a frame the archive lacks (its process died before
        writing it) is not kept; a record spooled before the review queue existed waits for no review."""
        row = {"review": None, **record}
        for key in ("time", "trigger_time"):
            if row.get(key) is not None:
                row[key] = datetime.fromisoformat(row[key])
        if row.get("frame_kept") and not self.archive.has(row["frame_sha256"]):
            row["frame_kept"] = False
        return row

    # --- pruning --------------------------------------------------------------------------------------------

    def prune(self, now: datetime | None = None, grace_s: float = PRUNE_GRACE_S) -> int:
        """Apply the retention policies and the size cap, then delete the archive files no record keeps (older than
        `grace_s`); returns the files deleted."""
        self._last_prune = time.monotonic()
        self._refresh_policies(force=True)
        self.store.expire_frames(self._policies, self.settings.default_policy, now or utc_now())
        self.store.cap_frames(self.settings.max_archive_bytes)
        return self._delete_unkept(grace_s)

    def _delete_unkept(self, grace_s: float) -> int:
        return self.archive.collect(self.store.unreferenced, grace_s)
