"""Product store: the product registry as rows of the records database, reference banks as immutable blobs in the
data dir; shared by any number of replicas on one database (PostgreSQL) and one folder.

    products            one row per product: current version and its uid (the compare-and-swap token), a
                        generation bumped by every change, threshold overrides, rules, recalibrated thresholds
    product_versions    (product_id, version) unique: the bank blob's sha256, calibration, creation time; the
                        current version and the one before it are kept
    labelled_frames     service.products.frames
    <blobs>/<sha256>    a version's ReferenceSet as one uncompressed tar of the folder `ReferenceSet.save` writes
                        (service.records.blobs: written, fsynced and renamed before a row names it)

Writing. A new version's blob is written first (the slow part, no lock), then one transaction moves the product:
`UPDATE products SET version = version + 1, uid = :new, generation = generation + 1 WHERE product_id = :id AND
uid = :expected`; no row updated is a StoreConflict (HTTP 409): another upload committed first (on any replica)
or the product was deleted, so an upload whose fit began before a delete never resurrects it. A first upload
INSERTs the row (one already there: a conflict), and the unique `product_key` (the id lower-cased) refuses an id
that differs from another only by case. The version row is inserted in the same transaction. A delete is one
transaction removing the product, its versions and labelled frames. A crash at any point leaves the previous
state; blobs no row names are removed by `collect_garbage` once older than a grace period (another replica may
be between its blob and its commit).

Replicas. Each keeps its loaded products in memory; `refresh(product_id | None)` re-reads rows (for all products
one query of (product_id, uid, generation)) and loads what changed: a new uid loads that version's blob, a new
generation alone only updates the overrides. Listeners (`add_listener`) are told either way, and of deletions.
Every write transaction announces the product (service.records.changes), so a change feed calls
`refresh_one_or_all` on every replica. `get` of a product not in memory reads its row before answering None, so a
fresh replica serves at once.

Outages. The database down: writes, listings and loads raise Unavailable (503, `database_error` says why); the
products in memory keep serving inspections. The blob folder gone, not a directory or unreadable (a volume
detached): `check_available` raises StoreUnavailable (503) with `unavailable_reason`, and so does a load that needs
a blob; products in memory are kept.

Another blob backend (an S3-compatible object store) plugs in as a BlobStore (service.records.blobs); not
implemented.
"""

from __future__ import annotations

import io
import logging
import os
import tarfile
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, delete, insert, select, union, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from model import ReferenceSet
from service.decisions.rules import AcceptanceRules, sets_something
from service.decisions.thresholds import PROVISIONAL_WARNING, Calibration
from service.errors import Unavailable
from service.imaging.formats import PRODUCT_ID
from service.records.blobs import BlobStore
from service.records.changes import announce
from service.records.database import migrate
from service.records.tables import labelled_frames, product_versions, products

log = logging.getLogger(__name__)

ANY = object()  # commit(expected=ANY): no compare-and-swap
BLOB_GRACE_S = 600.0  # an unreferenced blob younger than this may be another replica's write in progress
KEPT_VERSIONS = 2  # version rows kept per product: the current one and the one before it
RETRY_AFTER_S = 5.0

T = TypeVar("T")
Listener = Callable[[str, "Product | None"], None]
Importer = Callable[["ProductStore"], None]


class StoreUnavailable(OSError):
    """The blob folder cannot be read (a volume lost or detached, a permission): HTTP 503."""


class StoreConflict(Exception):
    """The product changed (new version or deleted) since the caller looked at it (HTTP 409)."""


class StoreError(OSError):
    """The data dir could not store a blob; the previous state is untouched (HTTP 507)."""


class ProductMissing(FileNotFoundError):
    """The product is not (or no longer) stored."""


def is_valid_product_id(product_id: str) -> bool:
    """Whether the id matches PRODUCT_ID (1-64 of letters, digits, `._-`, starting with a letter or digit)."""
    return PRODUCT_ID.fullmatch(product_id) is not None


def product_key(product_id: str) -> str:
    """The id as the unique key compares it: ids that differ only by case are one product (ids are ASCII)."""
    return product_id.lower()


def storage_failure(action: str, root: Path, err: BaseException) -> StoreError:
    """The StoreError of a failed `action` ("store product 'p'") in the data dir folder `root`: names the folder and
    the library's error (a full or read-only disk raises OSError, SafetensorError, numpy's errors, ...)."""
    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    return StoreError(
        f"could not {action} in the data dir {root} ({type(err).__name__}: {reason}); "
        "check the free space and permissions of the volume behind DCPSFR_DATA_DIR"
    )


def utc_now() -> datetime:
    """Now, UTC, without a zone: how the tables store times."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class Product:
    """One product's current version, in memory. Immutable: a replace builds a new Product."""

    product_id: str
    version: int
    refs: ReferenceSet
    calibration: Calibration
    created_at: str
    threshold_override: float | None = None
    pixel_threshold_override: float | None = None
    uid: str = ""  # unique per version, across deletes and replicas
    generation: int = 0  # bumped by every change of the product's row
    rules: AcceptanceRules | None = None  # kept across uploads: they describe the product
    rules_version: int = 0  # counts the rule changes of this product

    @property
    def threshold(self) -> float:
        """The image threshold in force: the manual override, else the calibrated one."""
        return self.calibration.threshold if self.threshold_override is None else self.threshold_override

    @property
    def pixel_threshold(self) -> float:
        """The pixel threshold in force: the manual override, else the calibrated one."""
        if self.pixel_threshold_override is None:
            return self.calibration.pixel_threshold
        return self.pixel_threshold_override

    @property
    def warnings(self) -> list[str]:
        """The calibration's warnings; a manual threshold is not provisional, so that warning goes."""
        if self.threshold_override is None:
            return list(self.calibration.warnings)
        return [w for w in self.calibration.warnings if not w.startswith(PROVISIONAL_WARNING)]


def bank_blob(refs: ReferenceSet) -> bytes:
    """A ReferenceSet as one blob: `tar_folder` of the files `ReferenceSet.save` writes (one blob, one hash)."""
    with tempfile.TemporaryDirectory(prefix="dcpsfr-bank-") as folder:
        refs.save(folder)
        return tar_folder(Path(folder), sorted(p.name for p in Path(folder).iterdir()))


def tar_folder(folder: Path, names: list[str]) -> bytes:
    """The files `names` of `folder` as an uncompressed tar without times or owners (equal files, equal bytes: one
    blob; the tensors do not compress)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            data = (folder / name).read_bytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def unpacked_bank(data: bytes, load: Callable[[Path], ReferenceSet]) -> ReferenceSet:
    """The ReferenceSet of a bank blob, read by `load` from a temporary folder (plain files only are taken)."""
    with tempfile.TemporaryDirectory(prefix="dcpsfr-bank-") as folder, tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            if not member.isfile() or "/" in member.name or member.name.startswith("."):
                raise ValueError(f"unexpected member {member.name!r} in a reference bank blob")
            (Path(folder) / member.name).write_bytes(tar.extractfile(member).read())
        return load(Path(folder))


def version_of(product: Product | None) -> tuple[str, int] | None:
    """(uid, generation) of a product: what a change of its rows changes."""
    return None if product is None else (product.uid, product.generation)


def rules_of(raw: dict[str, Any] | None) -> AcceptanceRules | None:
    """Stored rules as AcceptanceRules (rules that set nothing are no rules)."""
    return AcceptanceRules.model_validate(raw) if raw is not None and sets_something(raw) else None


class ProductStore:
    """Thread-safe and multi-process-safe (see the module docstring); reads are lookups of immutable Products."""

    def __init__(self, engine: Engine, blobs: BlobStore, importer: Importer | None = None) -> None:
        self.engine = engine
        self.blobs = blobs
        self.root = blobs.folder  # the data dir folder named in errors
        self.importer = importer  # run once, after the schema is migrated (the old folder store's products)
        self._products: dict[str, Product] = {}
        self._unloadable: dict[str, tuple[str, int]] = {}  # (uid, generation) of rows that failed to load (logged)
        self._load_references: Callable[[Path], ReferenceSet] | None = None
        self._prepared = False
        self.open_error: str | None = None  # why the last open() failed
        self.unavailable_reason: str | None = None  # why the blob folder was unreadable at the last look
        self.database_error: str | None = None  # why the database did not answer at the last try
        self._listeners: list[Listener] = []
        self._lock = threading.RLock()  # guards the dicts
        self._product_locks: dict[str, threading.Lock] = {}  # one reader-or-installer per product in this process

    def __len__(self) -> int:
        return len(self._products)

    def add_listener(self, listener: Listener) -> None:
        """`listener(product_id, product or None)` after any change is installed (local or another replica's)."""
        self._listeners.append(listener)

    # --- reads -----------------------------------------------------------------------------------------------

    def loaded(self, product_id: str) -> Product | None:
        """The product if it is in memory (no I/O: safe on the event loop), else None."""
        return self._products.get(product_id)

    def get(self, product_id: str) -> Product | None:
        """The product in memory; if not there, its row is read (and the product loaded) before None. Raises
        Unavailable (database) or StoreUnavailable (blob folder) only for a product not in memory."""
        product = self._products.get(product_id)
        if product is not None or self._load_references is None or not is_valid_product_id(product_id):
            return product
        return self._load(product_id)

    def all(self) -> list[Product]:
        """Every stored product (loading those not in memory or changed), sorted by id; Unavailable when the
        database does not answer, StoreUnavailable while the blob folder is."""
        self.check_available()
        self.refresh()
        return sorted(self._products.values(), key=lambda p: p.product_id)

    def token(self, product_id: str) -> str | None:
        """The current version's uid, None if the product does not exist: pass it to commit(expected=)."""
        query = select(products.c.uid).where(products.c.product_id == product_id)
        return self.read(lambda c: c.execute(query).scalar())

    def product_ids(self) -> list[str]:
        """Ids of every stored product, sorted; Unavailable when the database does not answer."""
        query = select(products.c.product_id).order_by(products.c.product_id)
        return self.read(lambda c: list(c.execute(query).scalars()))

    def check_available(self) -> None:
        """Look at the blob folder now (one open of the directory, no listing): raises StoreUnavailable with the
        reason when it is gone, not a directory or unreadable. Records the state (`unavailable_reason`) either way;
        products in memory are kept."""
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as err:
            raise self._unavailable(err) from None
        os.close(fd)
        self._available()

    # --- writes ----------------------------------------------------------------------------------------------

    def commit(self, product_id: str, refs: ReferenceSet, calibration: Calibration, expected: Any = ANY) -> Product:
        """Write a new version and make it current. `expected` (from `token`): StoreConflict if it moved.

        Raises StoreConflict (it moved, or a new id differs from an existing one only by case), StoreError (the
        blob could not be written; nothing changed), Unavailable (the database does not answer; nothing changed),
        ValueError (invalid id)."""
        self._check_id(product_id)
        sha256, size = self._write_bank(product_id, refs)
        uid = uuid.uuid4().hex
        created_at = datetime.now(UTC).isoformat()
        version_row = {
            "product_id": product_id,
            "uid": uid,
            "bank_sha256": sha256,
            "bank_bytes": size,
            "calibration": calibration.to_dict(),
            "created_at": created_at,
        }

        def write(c: Connection) -> dict[str, Any]:
            row = self._claim(c, product_id, uid, expected)
            c.execute(insert(product_versions).values(**version_row, version=row["version"]))
            old = product_versions.c.version <= row["version"] - KEPT_VERSIONS
            c.execute(delete(product_versions).where(product_versions.c.product_id == product_id, old))
            announce(c, product_id)
            return row

        try:
            row = self._write_retried(write, retry=expected is ANY)
        except IntegrityError:
            self._refresh_quietly(product_id)
            raise self._first_upload_conflict(product_id) from None
        except StoreConflict:
            self._refresh_quietly(product_id)  # learn now what the winner did
            raise
        product = Product(
            product_id,
            row["version"],
            refs,
            calibration,
            created_at,
            uid=uid,
            generation=row["generation"],
            rules=rules_of(row["rules"]),
            rules_version=row["rules_version"],
        )
        with self._product_lock(product_id):
            installed = self._products.get(product_id)
            newer = installed is not None and installed.version > product.version  # heard of a later commit already
            if not newer:
                self._install(product_id, product)
        if not newer:
            self._notify(product_id, product)
        return product

    def check_new_id(self, product_id: str) -> None:
        """Raise StoreConflict when a stored product's id differs from `product_id` only by case: two products an
        operator cannot tell apart (and one folder on a case-insensitive volume, for the clients that mirror them).
        Unavailable when the database does not answer."""
        twin = self.read(lambda c: self._twin(c, product_id))
        if twin is not None:
            raise self._twin_conflict(twin)

    def set_thresholds(self, product_id: str, threshold: float | None, pixel_threshold: float | None) -> Product | None:
        """Override the thresholds (None keeps the calibrated value); None if the product does not exist."""
        return self._update(product_id, {"threshold": threshold, "pixel_threshold": pixel_threshold})

    def set_rules(self, product_id: str, rules: AcceptanceRules | None) -> Product | None:
        """Replace the acceptance rules (None removes them), counting the change in `rules_version`; None if the
        product does not exist."""
        raw = None if rules is None else rules.model_dump(exclude_none=True)
        return self._update(product_id, {"rules": raw, "rules_version": products.c.rules_version + 1})

    def set_recalibration(self, product_id: str, uid: str, calibration: Calibration) -> Product | None:
        """Thresholds recomputed from calibration frames, for version `uid` only; None when the product is gone or
        its current version is another one (the caller's request raced an upload)."""
        return self._update(product_id, {"recalibration": calibration.to_dict()}, uid=uid)

    def delete(self, product_id: str) -> bool:
        """Remove the product, its versions and labelled frames in one transaction (their blobs go to the
        garbage collector); False if absent. Unavailable when the database does not answer."""

        def write(c: Connection) -> bool:
            # the product's row first: it waits for a writer holding it (a label, a commit), whose rows the next
            # statements then see and delete (each statement reads what is committed when it starts)
            removed = c.execute(delete(products).where(products.c.product_id == product_id)).rowcount
            for table in (labelled_frames, product_versions):
                c.execute(delete(table).where(table.c.product_id == product_id))
            announce(c, product_id)
            return removed > 0

        removed = self._write(write)
        with self._product_lock(product_id):
            existed = self._forget(product_id)
        if existed:
            self._notify(product_id, None)
        return removed or existed

    @contextmanager
    def transaction(self, product_id: str) -> Iterator[Connection]:
        """A write transaction holding the product's row (PostgreSQL: its row lock; SQLite: the write lock), for
        a read-modify-write of rows that belong to it (labelled frames); announced at commit. Raises ProductMissing
        when the product is gone, Unavailable when the database does not answer."""
        try:
            self._prepare()
            with self.engine.begin() as c:
                held = update(products).where(products.c.product_id == product_id).values(updated=utc_now())
                if c.execute(held).rowcount == 0:
                    raise ProductMissing(f"product {product_id!r} is not stored")
                yield c
                announce(c, product_id)
        except SQLAlchemyError as err:
            raise self._database_down(err) from err
        self._database_up()

    # --- loading and replicas --------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """Whether `open` succeeded (reference loading is set up)."""
        return self._load_references is not None

    def open(self, load_references: Callable[[Path], ReferenceSet]) -> None:
        """Make the blob folder and remember how to load references; products load lazily (or by `refresh`). The
        database is migrated (and old products imported) at its first use, tried again while it does not answer.

        Raises StoreUnavailable (one line: the path and DCPSFR_DATA_DIR) when the folder cannot be made."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            self.open_error = (
                f"the product store {self.root} cannot be opened ({type(err).__name__}: {err.strerror or err}); "
                "check DCPSFR_DATA_DIR"
            )
            raise StoreUnavailable(self.open_error) from None
        self.open_error = None
        self._load_references = load_references
        try:
            self._prepare()
        except SQLAlchemyError as err:
            self._database_down(err)  # logged; the first read or write tries again

    def refresh(self, product_id: str | None = None) -> list[str]:
        """Re-read the rows of one product (or all: one query) and install what changed: a new uid loads its
        version, a new generation updates the overrides, a missing row forgets the product; returns the ids
        changed. Raises Unavailable when the database does not answer (nothing is forgotten then); changes nothing
        while the blob folder is unavailable (`unavailable_reason`)."""
        if product_id is not None:
            before = version_of(self._products.get(product_id))
            after = self._load(product_id) if is_valid_product_id(product_id) else None
            return [] if version_of(after) == before else [product_id]
        try:
            self.check_available()  # where the poll notices a lost blob folder (and its return)
        except StoreUnavailable:
            return []  # products in memory are kept; a new version could not load
        query = select(products.c.product_id, products.c.uid, products.c.generation)
        before = dict(self._products)  # a product installed after the query (a commit here) is not gone
        rows = {r.product_id: (r.uid, r.generation) for r in self.read(lambda c: c.execute(query).all())}
        changed = []
        for gone in sorted(set(before) - set(rows)):
            with self._product_lock(gone):
                if self._products.get(gone) is before[gone] and self._forget(gone):
                    changed.append(gone)
                    self._notify(gone, None)
        for pid, (uid, generation) in sorted(rows.items()):
            loaded = self._products.get(pid)
            if loaded is not None and (loaded.uid, loaded.generation) == (uid, generation):
                continue
            if self._unloadable.get(pid) == (uid, generation):
                continue  # logged once; tried again when its row changes
            if self._load(pid) is not loaded:
                changed.append(pid)
        return changed

    def refresh_one_or_all(self, product_id: str | None) -> None:
        """`refresh` for a change feed: a failure is logged (once per outage), never raised."""
        try:
            changed = self.refresh(product_id)
        except (Unavailable, StoreUnavailable):
            return  # logged where it was recorded
        except Exception:
            log.exception("product store refresh failed")
            return
        if changed:
            log.info("product store: picked up changes of %s", ", ".join(changed))

    def collect_garbage(self, grace_s: float = BLOB_GRACE_S) -> int:
        """Delete the blobs no version or labelled frame names, once older than `grace_s`; returns how many."""
        banks, frames = product_versions.c.bank_sha256, labelled_frames.c.sha256

        def unreferenced(names: list[str]) -> list[str]:
            query = union(select(banks).where(banks.in_(names)), select(frames).where(frames.in_(names)))
            referenced = set(self.read(lambda c: c.execute(query).scalars().all()))
            return [name for name in names if name not in referenced]

        deleted = self.blobs.collect(unreferenced, grace_s)
        if deleted:
            log.info("product store: %d unreferenced blob(s) removed", deleted)
        return deleted

    # --- internals -------------------------------------------------------------------------------------------

    def _prepare(self) -> None:
        if self._prepared:
            return
        migrate(self.engine)
        if self.importer is not None:
            try:
                self.importer(self)
            except OSError as err:  # the old store's folder cannot be listed: not imported, the registry serves
                log.error("the old product store could not be read, nothing imported: %s", err)
        self._prepared = True

    def read(self, call: Callable[[Connection], T]) -> T:
        """`call(connection)` on a connection of the registry's database; Unavailable when it does not answer."""
        try:
            self._prepare()
            with self.engine.connect() as c:
                result = call(c)
        except SQLAlchemyError as err:
            raise self._database_down(err) from err
        self._database_up()
        return result

    def _write(self, call: Callable[[Connection], T]) -> T:
        try:
            self._prepare()
            with self.engine.begin() as c:
                result = call(c)
        except IntegrityError:
            raise
        except SQLAlchemyError as err:
            raise self._database_down(err) from err
        self._database_up()
        return result

    def _write_retried(self, call: Callable[[Connection], T], retry: bool) -> T:
        """`_write`; with `retry`, a first INSERT that lost to another writer's is tried again (as an UPDATE)."""
        for _ in range(3 if retry else 0):
            try:
                return self._write(call)
            except IntegrityError:
                continue
        return self._write(call)

    def _database_down(self, err: SQLAlchemyError) -> Unavailable:
        message = (
            f"the product registry (records database) does not answer: {str(err).splitlines()[0]}; products in "
            "memory still serve inspections"
        )
        if self.database_error is None:
            log.warning("%s", message)
        self.database_error = message
        return Unavailable(message, RETRY_AFTER_S)

    def _database_up(self) -> None:
        if self.database_error is not None:
            self.database_error = None
            log.info("the product registry answers again")

    def _check_id(self, product_id: str) -> None:
        if not is_valid_product_id(product_id):
            raise ValueError(f"invalid product id {product_id!r}")

    def _write_bank(self, product_id: str, refs: ReferenceSet) -> tuple[str, int]:
        """The version's bank blob, durable before any row names it; StoreError (nothing named) when it fails."""
        try:
            data = bank_blob(refs)
            return self.blobs.put(data), len(data)
        except Exception as err:  # every library raises its own kind for a full or read-only disk
            log.warning("product %r: writing its new version failed", product_id, exc_info=True)
            raise storage_failure(f"store product {product_id!r}", self.root, err) from err

    def _claim(self, c: Connection, product_id: str, uid: str, expected: Any) -> dict[str, Any]:
        """The compare-and-swap of a commit: the product's row moved to a new version `uid`; the row after it."""
        now = utc_now()
        if expected is not None:
            cas = [] if expected is ANY else [products.c.uid == expected]
            moved = c.execute(
                update(products)
                .where(products.c.product_id == product_id, *cas)
                .values(
                    version=products.c.version + 1,
                    uid=uid,
                    generation=products.c.generation + 1,
                    threshold=None,
                    pixel_threshold=None,
                    recalibration=None,
                    updated=now,
                )
            )
            if moved.rowcount == 1:
                columns = (products.c.version, products.c.generation, products.c.rules, products.c.rules_version)
                return dict(c.execute(select(*columns).where(products.c.product_id == product_id)).one()._mapping)
            if expected is not ANY:
                raise self._conflict(c, product_id)
        twin = self._twin(c, product_id)
        if twin is not None:
            raise self._twin_conflict(twin)
        first = {"version": 1, "generation": 1, "rules": None, "rules_version": 0}
        key = product_key(product_id)
        c.execute(insert(products).values(product_id=product_id, product_key=key, uid=uid, **first, created=now,
                                          updated=now))  # fmt: skip
        return first

    def _conflict(self, c: Connection, product_id: str) -> StoreConflict:
        version = c.execute(select(products.c.version).where(products.c.product_id == product_id)).scalar()
        if version is None:
            return StoreConflict(f"product {product_id!r} was deleted while this upload was being processed")
        return StoreConflict(
            f"product {product_id!r} changed while this upload was being processed: version {version} "
            "was stored meanwhile (by another request or replica); upload again to replace it"
        )

    def _first_upload_conflict(self, product_id: str) -> StoreConflict:
        """Why a first upload's INSERT was refused: a case twin, or the same id stored meanwhile."""
        try:
            twin = self.read(lambda c: self._twin(c, product_id))
        except Unavailable:
            twin = None
        if twin is not None:
            return self._twin_conflict(twin)
        return StoreConflict(
            f"product {product_id!r} changed while this upload was being processed: another version was stored "
            "meanwhile (by another request or replica); upload again to replace it"
        )

    @staticmethod
    def _twin(c: Connection, product_id: str) -> str | None:
        query = select(products.c.product_id).where(
            products.c.product_key == product_key(product_id), products.c.product_id != product_id
        )
        return c.execute(query).scalar()

    @staticmethod
    def _twin_conflict(twin: str) -> StoreConflict:
        return StoreConflict(
            f"product {twin!r} exists, and ids that differ only by case are one product on some volumes: "
            f"use {twin!r}, or another id for a new product"
        )

    def _update(self, product_id: str, values: dict[str, Any], uid: str | None = None) -> Product | None:
        """One UPDATE of the product's row (generation bumped, announced), then the product re-read; None when
        there is no such row (or, with `uid`, when its current version is another)."""
        condition = [products.c.product_id == product_id]
        if uid is not None:
            condition.append(products.c.uid == uid)
        values = {**values, "generation": products.c.generation + 1, "updated": utc_now()}

        def write(c: Connection) -> int:
            count = c.execute(update(products).where(*condition).values(**values)).rowcount
            announce(c, product_id)
            return count

        if self._write(write) == 0:
            return None if uid is None else self._refresh_quietly(product_id)
        return self._load(product_id)

    def _refresh_quietly(self, product_id: str) -> Product | None:
        try:
            return self._load(product_id)
        except (Unavailable, StoreUnavailable):
            return self._products.get(product_id)

    def _load(self, product_id: str) -> Product | None:
        """Read the product's row (and its version's, one join) and install it: a new uid loads the bank blob, a
        new generation alone updates the overrides; no row forgets it. A product that fails to load is logged once
        per (uid, generation) and None returned; Unavailable / StoreUnavailable when the database / blobs fail."""
        v = product_versions.c
        query = (
            select(products, v.bank_sha256, v.calibration, v.created_at)
            .join(product_versions, (v.product_id == products.c.product_id) & (v.version == products.c.version))
            .where(products.c.product_id == product_id)
        )
        with self._product_lock(product_id):
            row = self.read(lambda c: c.execute(query).one_or_none())
            before = self._products.get(product_id)
            product = None if row is None else self._product_from(row._mapping)
            if product is not None:
                self._install(product_id, product)
            elif row is None:
                self._forget(product_id)
        if row is None and before is not None:
            self._notify(product_id, None)
        elif product is not None and version_of(product) != version_of(before):
            self._notify(product_id, product)
        return product

    def _product_from(self, row: Any) -> Product | None:
        """The Product of a joined row (installed and notified by the caller); None when it cannot load."""
        product_id = row["product_id"]
        calibration = Calibration.from_dict(row["recalibration"] or row["calibration"])
        overrides = {
            "calibration": calibration,
            "threshold_override": row["threshold"],
            "pixel_threshold_override": row["pixel_threshold"],
            "generation": row["generation"],
            "rules": rules_of(row["rules"]),
            "rules_version": row["rules_version"],
        }
        cached = self._products.get(product_id)
        if cached is not None and cached.uid == row["uid"]:
            product = replace(cached, **overrides)
        else:
            refs = self._load_bank(product_id, row)
            if refs is None:
                return None
            product = Product(product_id, row["version"], refs, created_at=row["created_at"], uid=row["uid"],
                              **overrides)  # fmt: skip
        return product

    def _load_bank(self, product_id: str, row: Any) -> ReferenceSet | None:
        assert self._load_references is not None, "open() the store first"
        try:
            self.check_available()
            return unpacked_bank(self.blobs.read(row["bank_sha256"]), self._load_references)
        except StoreUnavailable:
            raise
        except Exception as err:  # one unreadable product must not stop the service; its rows and blobs are kept
            if self._unloadable.get(product_id) != (row["uid"], row["generation"]):
                log.error("product %r not loaded (its rows and blobs are kept as they are): %s", product_id, err)
            with self._lock:
                self._unloadable[product_id] = (row["uid"], row["generation"])
            return None

    @contextmanager
    def _product_lock(self, product_id: str) -> Iterator[None]:
        with self._lock:
            lock = self._product_locks.setdefault(product_id, threading.Lock())
        with lock:
            yield

    def _install(self, product_id: str, product: Product) -> None:
        with self._lock:
            self._products[product_id] = product
            self._unloadable.pop(product_id, None)

    def _forget(self, product_id: str) -> bool:
        with self._lock:
            self._unloadable.pop(product_id, None)
            return self._products.pop(product_id, None) is not None

    def _notify(self, product_id: str, product: Product | None) -> None:
        for listener in self._listeners:
            try:
                listener(product_id, product)
            except Exception:
                log.exception("store listener failed for product %r", product_id)

    def _unavailable(self, err: OSError) -> StoreUnavailable:
        """Record why the blob folder cannot be read (logged when it breaks, not at every look); the error to raise."""
        reason = (
            f"the product store {self.root} is unavailable ({type(err).__name__}: {err.strerror or err}); "
            "products stay in memory until it is back; check the volume behind DCPSFR_DATA_DIR"
        )
        with self._lock:
            broke = self.unavailable_reason is None
            self.unavailable_reason = reason
        if broke:
            log.error("%s", reason)
        return StoreUnavailable(reason)

    def _available(self) -> None:
        if self.unavailable_reason is None:
            return
        with self._lock:
            self.unavailable_reason = None
        log.info("the product store %s is available again", self.root)
