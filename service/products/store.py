"""Product store: one folder per product under DATA_DIR/products, shared safely by any number of replicas. The
folder's files, its pointer and its lock are service.products.files; this module is how writers and readers use
them.

    products/<id>/current.json   pointer: {"version": N, "uid": str, "generation": G,
                                           "threshold": null|float, "pixel_threshold": null|float}
    products/<id>/v<N>/          ReferenceSet files + product.json (calibration, creation time)
    products/<id>/<name>         per-product files other features add (calibration sets, rules, ...)
    products/<id>/rules.json     acceptance rules: {"rules": null|{...}, "rules_version": M}
    products/<id>/calibration.json  thresholds recomputed from calibration frames: {"uid", "calibration"}
                                 (applies only to the version with that uid; the workflows write it)
    products/<id>/.lock          held for milliseconds by the one writer that moves the pointer

Writing. A new version is written to `products/.tmp-<id>-*` and fsynced without any lock (the slow part).
Then the writer takes the product's lock: `.lock` created with O_CREAT|O_EXCL (atomic on local disks and on
NFSv3+/CephFS/EFS). A lock whose mtime is older than LOCK_STALE_S was left by a killed writer and is broken;
this needs the replicas' clocks in step within seconds (NTP). Under the lock the writer reads the pointer,
checks what it expected (compare-and-swap), claims the next version number by renaming its folder to `v<N>`
(N = one above every version present: unique, since claims only happen under the lock), replaces the
pointer atomically (temp file, fsync, os.replace) with a new `uid` and `generation + 1`, and lets go.
Threshold overrides, per-product files and deletes take the same lock. A crash at any point leaves the
previous version current.

Concurrent uploads: optimistic. `token(id)` (the pointer's uid, or None) is read before the fit, and
`commit(..., expected=token)` raises StoreConflict (HTTP 409) if the product changed meanwhile: another
upload (on any replica) committed first, or the product was deleted (an upload whose fit began before a
delete never resurrects it). The loser is told, not retried: its client decides whether to upload again.

Replicas. `refresh()` (polled by service.products.sync) costs one directory listing and one stat of each pointer:
the pointer is only ever replaced by a rename, so any change gives a new (inode, mtime_ns, size). A change
re-reads the pointer: a new uid loads that version, a new generation alone updates the overrides; listeners
(`add_listener`) are told either way, and about deletions. Products are loaded lazily: `get` of a product
not in memory looks at the disk before answering None, so a fresh replica serves at once.

A lost volume. A store folder that is gone, not a directory or unreadable (an NFS mount lost, a volume
detached) is not "no products": `refresh` keeps every product in memory and records why in
`unavailable_reason` (logged once as an error, and once as info when the folder is back); `all` and
`check_available` raise StoreUnavailable with that reason. The service answers 503 meanwhile. A folder that
is there and empty is legitimately empty (open() creates it; a delete of the last product leaves it).

Per-product files (for other features). Put them in the product folder with `write_product_file` (atomic,
under the lock, bumps the generation) and read them with `product_file`; every replica's listeners then hear
of the change within one poll. Names: letters, digits, `._-`, not starting with a dot or `v<digits>`.
A new upload keeps these files; a delete removes them with the product.

Debris (`.tmp-*`, `.trash-*`, a folder whose first upload never got its pointer) is removed only once older
than `debris_age_s`: another replica may be writing it right now. Versions other than the current one are
removed by each writer (those above the pointer under the lock, where no claim can be in flight). A replica
that reads a version its writer just removed re-reads the pointer.

Another backend (e.g. an S3-compatible object store) would implement the same public methods: `get`,
`all`, `token`, `commit`, `set_thresholds`, `write_product_file`, `product_file`, `delete`, `refresh`,
`open`, `add_listener` (the lock becomes a conditional put on the pointer object). Not implemented.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from model import ReferenceSet, fsync_dir, is_temporary, remove_path, write_atomic
from service.decisions.rules import AcceptanceRules
from service.decisions.thresholds import PROVISIONAL_WARNING, Calibration
from service.imaging.formats import PRODUCT_ID
from service.products.files import (
    POINTER,
    PRODUCT_META,
    RULES_FILE,
    ProductMissing,
    Stat,
    StoreError,
    case_twin,
    checked_file_name,
    fsync_tree,
    named_exactly,
    pointer_stat,
    pointer_uid,
    product_lock,
    read_pointer,
    read_recalibration,
    read_rules,
    remove_versions,
    storage_failure,
    version_dirs,
    write_json_atomic,
)

log = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
DEBRIS_AGE_S = 600.0  # debris younger than this may be another replica's write in progress
ANY = object()  # commit(expected=ANY): no compare-and-swap

Listener = Callable[[str, "Product | None"], None]


class StoreUnavailable(OSError):
    """The data dir cannot be opened at all (missing permission, a file in the way, ...): a configuration mistake."""


class StoreConflict(Exception):
    """The product changed (new version or deleted) since the caller looked at it (HTTP 409)."""


def is_valid_product_id(product_id: str) -> bool:
    """Whether the id matches PRODUCT_ID (1-64 of letters, digits, `._-`, starting with a letter or digit)."""
    return PRODUCT_ID.fullmatch(product_id) is not None


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
    generation: int = 0  # bumped by every pointer change (new version, thresholds, per-product files)
    rules: AcceptanceRules | None = None  # from rules.json: kept across uploads, they describe the product
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


class ProductStore:
    """Thread-safe and multi-process-safe (see the module docstring); reads are lookups of immutable Products."""

    def __init__(self, root: Path, debris_age_s: float = DEBRIS_AGE_S) -> None:
        self.root = Path(root)
        self.debris_age_s = debris_age_s
        self._products: dict[str, Product] = {}
        self._stats: dict[str, Stat] = {}  # pointer stat behind each loaded (or unloadable) product
        self._unloadable: set[str] = set()
        self._load_references: Callable[[Path], ReferenceSet] | None = None
        self.open_error: str | None = None  # why the last open() failed
        self.unavailable_reason: str | None = None  # why the folder was unreadable at the last look
        self._listeners: list[Listener] = []
        self._lock = threading.RLock()  # serialises this process's writes and installs

    def __len__(self) -> int:
        return len(self._products)

    def add_listener(self, listener: Listener) -> None:
        """`listener(product_id, product or None)` after any change is installed (local or another replica's)."""
        self._listeners.append(listener)

    # --- reads -----------------------------------------------------------------------------------------------

    def get(self, product_id: str) -> Product | None:
        """The product in memory; if not there, the disk is checked (and the product loaded) before None."""
        product = self._products.get(product_id)
        if product is not None or self._load_references is None or not is_valid_product_id(product_id):
            return product
        return self._load(product_id)

    def all(self) -> list[Product]:
        """Every product on disk (loading those not yet in memory), sorted by id; StoreUnavailable when the store
        folder is gone, not a directory or unreadable."""
        products = (self.get(product_id) for product_id in self.product_ids_on_disk())
        return sorted((p for p in products if p is not None), key=lambda p: p.product_id)

    def token(self, product_id: str) -> str | None:
        """The current version's uid on disk, None if the product does not exist: pass it to commit(expected=)."""
        try:
            pointer = read_pointer(self._existing_folder(product_id))
        except ProductMissing:
            return None
        return None if pointer is None else pointer_uid(pointer)

    def product_file(self, product_id: str, name: str) -> Path:
        """Where a per-product file lives (see write_product_file)."""
        return self._folder(product_id) / checked_file_name(name)

    def product_ids_on_disk(self) -> list[str]:
        """Ids of the product folders that have a pointer, sorted.

        Raises StoreUnavailable when the store folder is gone, not a directory or unreadable (see check_available)."""
        names = (e.name for e in self._list_root() if is_valid_product_id(e.name))
        return sorted(n for n in names if pointer_stat(self.root / n) is not None)

    def check_available(self) -> None:
        """Look at the store folder now (one open of the directory, no listing): raises StoreUnavailable with the
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

        Raises StoreConflict (it moved, or a new id differs from an existing one only by case), StoreError (nothing
        written, nothing left behind: whatever the disk or a library raised while writing), ValueError (invalid id).
        """
        folder = self._folder(product_id)
        uid = uuid.uuid4().hex
        created_at = datetime.now(UTC).isoformat()
        tmp = self.root / f"{TMP_PREFIX}{product_id}-{uid}"
        claimed: Path | None = None
        first = False
        try:
            self._write_version(tmp, product_id, uid, created_at, refs, calibration)
            with self._lock, product_lock(folder, create=expected is ANY or expected is None):
                pointer = read_pointer(folder) if named_exactly(folder) else None
                first = pointer is None
                if first:
                    self.check_new_id(product_id)
                check_expected(product_id, pointer, expected)
                remove_versions(folder, lambda v: pointer is None or v > pointer["version"])  # crashed claims
                version = max([*version_dirs(folder), 0 if pointer is None else pointer["version"]]) + 1
                claimed = folder / f"v{version}"
                os.rename(tmp, claimed)
                fsync_dir(folder)
                generation = 1 if pointer is None else pointer.get("generation", 0) + 1
                new_pointer = {"version": version, "uid": uid, "generation": generation}
                write_json_atomic(folder / POINTER, {**new_pointer, "threshold": None, "pixel_threshold": None})
                claimed = None  # current now
                product = Product(
                    product_id,
                    version,
                    refs,
                    calibration,
                    created_at,
                    uid=uid,
                    generation=generation,
                    **read_rules(folder),
                )
                self._install(product_id, product, pointer_stat(folder))
        except (StoreConflict, ProductMissing) as err:
            self._discard(tmp, claimed, folder if first else None)
            self._resync(product_id)  # learn now what the winner did
            if isinstance(err, StoreConflict):
                raise
            raise StoreConflict(f"product {product_id!r} was deleted while this upload was being processed") from None
        except StoreError:
            self._discard(tmp, claimed, folder if first else None)
            raise
        except OSError as err:
            self._discard(tmp, claimed, folder if first else None)
            raise storage_failure(f"store product {product_id!r}", self.root, err) from err
        remove_versions(folder, lambda v: v < version)
        self._notify(product_id, product)
        return product

    def check_new_id(self, product_id: str) -> None:
        """Raise StoreConflict when a stored product's id differs from `product_id` only by case (str.casefold): on a
        case-insensitive volume (SMB, NAS) both would be one folder, the new one overwriting the old; on ext4 two
        products an operator cannot tell apart. Refused on every volume alike."""
        twin = case_twin(self.root, product_id)
        if twin is not None:
            raise StoreConflict(
                f"product {twin!r} exists, and ids that differ only by case are one product on some volumes: "
                f"use {twin!r}, or another id for a new product"
            )

    def _write_version(
        self, tmp: Path, product_id: str, uid: str, created_at: str, refs: ReferenceSet, calibration: Calibration
    ) -> None:
        """The new version's files in `tmp`, fsynced (no lock: the slow part). Any error while writing (the disk's
        OSError, safetensors' SafetensorError, numpy's, ...) is a StoreError naming the data dir, `tmp` removed."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            refs.save(tmp)
            meta = {"product_id": product_id, "uid": uid, "created_at": created_at}
            (tmp / PRODUCT_META).write_text(json.dumps({**meta, "calibration": calibration.to_dict()}, indent=2))
            fsync_tree(tmp)
        except Exception as err:  # every library raises its own kind for a full or read-only disk
            remove_path(tmp)
            log.warning("product %r: writing its new version failed", product_id, exc_info=True)
            raise storage_failure(f"store product {product_id!r}", self.root, err) from err

    def _discard(self, tmp: Path, claimed: Path | None, first_folder: Path | None) -> None:
        """Remove what a failed commit wrote: its temp folder, a version folder it claimed but never made current,
        and the folder of a first upload that got no pointer (only when empty: another writer may be in it)."""
        remove_path(tmp)
        if claimed is not None:
            remove_path(claimed)
        if first_folder is not None and pointer_stat(first_folder) is None:
            with suppress(OSError):
                first_folder.rmdir()

    def set_thresholds(self, product_id: str, threshold: float | None, pixel_threshold: float | None) -> Product | None:
        """Override the thresholds (None keeps the calibrated value); None if the product does not exist."""
        overrides = {"threshold": threshold, "pixel_threshold": pixel_threshold}
        return self._update_pointer(product_id, overrides, f"thresholds of {product_id!r}")

    def write_product_file(self, product_id: str, name: str, data: bytes) -> Product | None:
        """Write a per-product file atomically and bump the generation, so every replica hears of it.

        None if the product does not exist; StoreError if the disk refuses; ValueError for a bad name."""
        path = self.product_file(product_id, name)
        return self._update_pointer(product_id, {}, f"{name} of {product_id!r}", lambda: write_atomic(path, data))

    def set_rules(self, product_id: str, rules: AcceptanceRules | None) -> Product | None:
        """Replace the acceptance rules (None removes them), counting the change in `rules_version`.

        None if the product does not exist; StoreError if the disk refuses."""
        path = self.product_file(product_id, RULES_FILE)

        def write() -> None:  # under the product's lock, so the count is exact across replicas
            version = read_rules(path.parent)["rules_version"] + 1
            content = {
                "rules": None if rules is None else rules.model_dump(exclude_none=True),
                "rules_version": version,
            }
            write_atomic(path, json.dumps(content).encode())

        return self._update_pointer(product_id, {}, f"rules of {product_id!r}", write)

    @contextmanager
    def locked(self, product_id: str) -> Iterator[None]:
        """Hold the product's writer lock (every replica's) for a read-modify-write of a per-product file.

        Raises ProductMissing when the product folder is gone, StoreError when the lock stays taken."""
        with product_lock(self._existing_folder(product_id), create=False):
            yield

    def delete(self, product_id: str) -> bool:
        """Remove the product: the folder is renamed away (atomic) before memory forgets it. False if absent.

        Raises StoreError when the disk refuses (the product then stays, on disk and in memory)."""
        folder = self._folder(product_id)
        trash = self.root / f"{TRASH_PREFIX}{product_id}-{uuid.uuid4().hex}"
        with self._lock:
            try:
                with product_lock(self._existing_folder(product_id), create=False) as lock:
                    os.rename(folder, trash)
                    lock.moved = True
                    fsync_dir(self.root)
                on_disk = True
            except ProductMissing:
                on_disk = False
            except OSError as err:
                raise storage_failure(f"delete product {product_id!r}", self.root, err) from err
            existed = self._forget(product_id)
        shutil.rmtree(trash, ignore_errors=True)
        if existed:
            self._notify(product_id, None)
        return on_disk or existed

    # --- loading and replicas --------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """Whether `open` succeeded (reference loading is set up)."""
        return self._load_references is not None

    def open(self, load_references: Callable[[Path], ReferenceSet]) -> None:
        """Remove old debris and remember how to load references; products load lazily (or by load_all).

        Raises StoreUnavailable (one line: the path and DCPSFR_DATA_DIR) when the folder cannot be made or read.
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._remove_debris()
        except OSError as err:
            self.open_error = (
                f"the product store {self.root} cannot be opened ({type(err).__name__}: {err.strerror or err}); "
                "check DCPSFR_DATA_DIR"
            )
            raise StoreUnavailable(self.open_error) from None
        self.open_error = None
        self._load_references = load_references

    def load_all(self, load_references: Callable[[Path], ReferenceSet] | None = None) -> None:
        """Load every product on disk now (problems are logged, not fatal)."""
        if load_references is not None:
            self.open(load_references)
        self.refresh()
        log.info("product store %s: %d product(s) loaded", self.root, len(self._products))

    def refresh(self) -> list[str]:
        """Notice other replicas' changes: load new or changed products, drop deleted ones; the ids changed.

        A store folder that is gone, not a directory or unreadable changes nothing (every product is kept): the
        reason is recorded in `unavailable_reason` and [] returned; the first good refresh clears it."""
        try:
            entries = self._list_root()
        except StoreUnavailable:
            return []
        on_disk = {}
        for entry in entries:
            if is_valid_product_id(entry.name) and (stat := pointer_stat(self.root / entry.name)) is not None:
                on_disk[entry.name] = stat
        changed = []
        gone = set(self._stats) - set(on_disk)
        if gone and not self._still_available():
            return []  # the folder went away during the listing: that deleted nothing
        for product_id in gone:
            if self._drop_if_gone(product_id):
                changed.append(product_id)
        for product_id, stat in sorted(on_disk.items()):
            if self._stats.get(product_id) != stat:
                self._load(product_id)
                changed.append(product_id)
        return changed

    def _list_root(self) -> list[os.DirEntry[str]]:
        """The store folder's entries; StoreUnavailable (recorded) when it cannot be listed."""
        try:
            with os.scandir(self.root) as entries:
                listing = list(entries)
        except OSError as err:
            raise self._unavailable(err) from None
        self._available()
        return listing

    def _still_available(self) -> bool:
        try:
            self.check_available()
        except StoreUnavailable:
            return False
        return True

    def _unavailable(self, err: OSError) -> StoreUnavailable:
        """Record why the store folder cannot be read (logged when it breaks, not at every look); the error to raise."""
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
            was_broken, self.unavailable_reason = self.unavailable_reason is not None, None
        if was_broken:
            log.info("the product store %s is available again", self.root)

    def _load(self, product_id: str) -> Product | None:
        """Read the pointer and (if its uid is new) the version; install unless the pointer moved meanwhile."""
        folder = self._folder(product_id)
        if not named_exactly(folder):
            return None  # on a case-insensitive volume, another product's folder
        if product_id in self._unloadable and self._stats.get(product_id) == pointer_stat(folder):
            return None  # logged once; tried again when its pointer changes
        for _ in range(5):
            stat = pointer_stat(folder)
            pointer = read_pointer(folder) if stat is not None else None
            if pointer is None:
                return None
            try:
                product = self._product_from(product_id, folder, pointer)
            except FileNotFoundError:
                continue  # the version was replaced while we read it
            except Exception as err:  # one unreadable product must not stop the service; its files are kept
                if product_id not in self._unloadable:
                    log.error("product %r not loaded (files kept as they are): %s", product_id, err)
                with self._lock:
                    self._unloadable.add(product_id)
                    self._stats[product_id] = stat
                return None
            with self._lock:
                if pointer_stat(folder) != stat:
                    continue  # changed while we loaded: read again
                self._install(product_id, product, stat)
            self._notify(product_id, product)
            return product
        return self._products.get(product_id)

    def _product_from(self, product_id: str, folder: Path, pointer: dict[str, Any]) -> Product:
        uid = pointer_uid(pointer)
        overrides = {
            "threshold_override": pointer.get("threshold"),
            "pixel_threshold_override": pointer.get("pixel_threshold"),
            "generation": pointer.get("generation", 0),
            **read_rules(folder),
            **read_recalibration(folder, uid),
        }
        cached = self._products.get(product_id)
        if cached is not None and cached.uid == uid:
            return replace(cached, **overrides)
        version = int(pointer["version"])
        version_dir = folder / f"v{version}"
        meta = json.loads((version_dir / PRODUCT_META).read_text())
        assert self._load_references is not None, "open() the store first"
        refs = self._load_references(version_dir)
        overrides.setdefault("calibration", Calibration.from_dict(meta["calibration"]))
        return Product(product_id, version, refs, created_at=meta["created_at"], uid=uid, **overrides)

    def _update_pointer(
        self, product_id: str, changes: dict[str, Any], what: str, write: Callable[[], None] | None = None
    ) -> Product | None:
        folder = self._folder(product_id)
        try:
            with self._lock, product_lock(self._existing_folder(product_id), create=False):
                pointer = read_pointer(folder)
                if pointer is None:
                    return None
                if write is not None:
                    write()
                new_pointer = {**pointer, **changes, "generation": pointer.get("generation", 0) + 1}
                write_json_atomic(folder / POINTER, new_pointer)
                product = self._product_from(product_id, folder, new_pointer)
                self._install(product_id, product, pointer_stat(folder))
        except ProductMissing:
            return None
        except StoreError:
            raise
        except OSError as err:
            raise storage_failure(f"store {what}", self.root, err) from err
        self._notify(product_id, product)
        return product

    def _resync(self, product_id: str) -> None:
        if not self._drop_if_gone(product_id) and self._load_references is not None:
            self._load(product_id)

    def _install(self, product_id: str, product: Product, stat: Stat | None) -> None:
        with self._lock:
            self._products[product_id] = product
            self._unloadable.discard(product_id)
            if stat is not None:
                self._stats[product_id] = stat

    def _forget(self, product_id: str) -> bool:
        with self._lock:
            self._stats.pop(product_id, None)
            self._unloadable.discard(product_id)
            return self._products.pop(product_id, None) is not None

    def _drop_if_gone(self, product_id: str) -> bool:
        with self._lock:
            if pointer_stat(self._folder(product_id)) is not None:
                return False
            existed = self._forget(product_id)
        if existed:
            self._notify(product_id, None)
        return existed

    def _notify(self, product_id: str, product: Product | None) -> None:
        for listener in self._listeners:
            try:
                listener(product_id, product)
            except Exception:
                log.exception("store listener failed for product %r", product_id)

    def _remove_debris(self) -> None:
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith((TMP_PREFIX, TRASH_PREFIX)):
                self._remove_if_old(entry, "debris of an interrupted write")
            elif entry.is_dir() and is_valid_product_id(entry.name):
                pointer = read_pointer(entry)
                if pointer is None:
                    self._remove_if_old(entry, "a first upload that never completed")
                    continue
                for inner in entry.iterdir():
                    if is_temporary(inner.name):
                        self._remove_if_old(inner, "debris of an interrupted write")
                for version, path in version_dirs(entry).items():
                    if version != pointer["version"]:
                        self._remove_if_old(path, "a version that is not current")

    def _remove_if_old(self, path: Path, why: str) -> None:
        try:
            age_s = time.time() - path.lstat().st_mtime
        except FileNotFoundError:
            return
        if age_s >= self.debris_age_s:
            log.warning("removing %s: %s", path, why)
            remove_path(path)

    # --- helpers ---------------------------------------------------------------------------------------------

    def _folder(self, product_id: str) -> Path:
        if not is_valid_product_id(product_id):
            raise ValueError(f"invalid product id {product_id!r}")
        folder = self.root / product_id
        assert folder.resolve().parent == self.root.resolve(), "product folders stay inside the data dir"
        return folder

    def _existing_folder(self, product_id: str) -> Path:
        """The product's folder when the store lists it under exactly this id; ProductMissing otherwise (on a
        case-insensitive volume `bottle` would open `Bottle`'s folder: every volume answers alike)."""
        folder = self._folder(product_id)
        if not named_exactly(folder):
            raise ProductMissing(f"no product folder {folder}")
        return folder


def check_expected(product_id: str, pointer: dict[str, Any] | None, expected: Any) -> None:
    """Raise StoreConflict unless the pointer's uid is `expected` (ANY skips the check); the message says whether the
    product was deleted or replaced."""
    if expected is ANY:
        return
    current = None if pointer is None else pointer_uid(pointer)
    if current == expected:
        return
    if current is None:
        raise StoreConflict(f"product {product_id!r} was deleted while this upload was being processed")
    raise StoreConflict(
        f"product {product_id!r} changed while this upload was being processed: version {pointer['version']} "
        "was stored meanwhile (by another request or replica); upload again to replace it"
    )
