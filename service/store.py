"""Product store: one folder per product under DATA_DIR/products, versions replaced atomically.

    products/<id>/current.json   pointer: {"version": N, "threshold": null|float, "pixel_threshold": null|float}
    products/<id>/v<N>/          ReferenceSet files + product.json (calibration, creation time)

A new version is written to `products/<id>/.tmp-*`, fsynced, renamed to `v<N>` and only then made current by
replacing `current.json` atomically (temp file, fsync, os.replace). Readers use the in-memory Product they
looked up, so a replace or delete racing with inspections never fails them. A crash at any point leaves the
previous version current; start-up removes the debris (`.tmp-*`, `.trash-*`, versions other than the current
one, a first upload that never got its pointer). Threshold overrides live in the pointer (reset by a new upload).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from model import ReferenceSet
from service.calibration import Calibration

log = logging.getLogger(__name__)

PRODUCT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
POINTER = "current.json"
PRODUCT_META = "product.json"
TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
VERSION_DIR = re.compile(r"^v([0-9]+)$")


class StoreError(OSError):
    """The store could not write a new version; the previous one is untouched."""


def is_valid_product_id(product_id: str) -> bool:
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

    @property
    def threshold(self) -> float:
        return self.calibration.threshold if self.threshold_override is None else self.threshold_override

    @property
    def pixel_threshold(self) -> float:
        if self.pixel_threshold_override is None:
            return self.calibration.pixel_threshold
        return self.pixel_threshold_override

    def summary(self) -> dict[str, Any]:
        return {
            "product_id": self.product_id,
            "version": self.version,
            "n_references": self.refs.n_references,
            "bank_size": self.refs.bank_size,
            "threshold": self.threshold,
            "pixel_threshold": self.pixel_threshold,
            "threshold_source": "calibrated" if self.threshold_override is None else "manual",
            "pixel_threshold_source": "calibrated" if self.pixel_threshold_override is None else "manual",
            "calibration": self.calibration.to_dict(),
            "config": self.refs.config_name,
            "created_at": self.created_at,
        }


class ProductStore:
    """Thread-safe: writes are serialised by one lock; reads are lock-free lookups of immutable Products."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._products: dict[str, Product] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._products)

    def get(self, product_id: str) -> Product | None:
        return self._products.get(product_id)

    def all(self) -> list[Product]:
        return sorted(self._products.values(), key=lambda p: p.product_id)

    # --- writes ----------------------------------------------------------------------------------------------

    def commit(self, product_id: str, refs: ReferenceSet, calibration: Calibration) -> Product:
        """Write a new version of the product and make it current; old versions are removed afterwards."""
        folder = self._folder(product_id)
        with self._lock:
            self.root.mkdir(parents=True, exist_ok=True)
            if not folder.is_dir():
                folder.mkdir()
                fsync_dir(self.root)
            version = self._next_version(folder)
            created_at = datetime.now(UTC).isoformat()
            tmp = folder / f"{TMP_PREFIX}v{version}-{uuid.uuid4().hex}"
            try:
                refs.save(tmp)
                meta = {"product_id": product_id, "version": version, "created_at": created_at}
                (tmp / PRODUCT_META).write_text(json.dumps({**meta, "calibration": calibration.to_dict()}, indent=2))
                fsync_tree(tmp)
                os.rename(tmp, folder / f"v{version}")
                fsync_dir(folder)
                write_json_atomic(folder / POINTER, {"version": version})
            except OSError as err:
                shutil.rmtree(tmp, ignore_errors=True)
                raise StoreError(f"could not store product {product_id!r}: {err}") from err
            product = Product(product_id, version, refs, calibration, created_at)
            self._products[product_id] = product
            remove_other_versions(folder, keep=version)
            return product

    def set_thresholds(self, product_id: str, threshold: float | None, pixel_threshold: float | None) -> Product | None:
        """Override the thresholds (None keeps the calibrated value); None if the product does not exist."""
        with self._lock:
            current = self._products.get(product_id)
            if current is None:
                return None
            pointer = {"version": current.version, "threshold": threshold, "pixel_threshold": pixel_threshold}
            try:
                write_json_atomic(self._folder(product_id) / POINTER, pointer)
            except OSError as err:
                raise StoreError(f"could not store thresholds of {product_id!r}: {err}") from err
            updated = replace(current, threshold_override=threshold, pixel_threshold_override=pixel_threshold)
            self._products[product_id] = updated
            return updated

    def delete(self, product_id: str) -> bool:
        """Remove the product (atomically: one rename, then cleanup); False if it does not exist."""
        folder = self._folder(product_id)
        with self._lock:
            existed = self._products.pop(product_id, None) is not None
            if not folder.is_dir():
                return existed
            trash = self.root / f"{TRASH_PREFIX}{product_id}-{uuid.uuid4().hex}"
            os.rename(folder, trash)
            fsync_dir(self.root)
            shutil.rmtree(trash, ignore_errors=True)
            return True

    # --- start-up --------------------------------------------------------------------------------------------

    def load_all(self, load_references: Callable[[Path], ReferenceSet]) -> None:
        """Clean crash debris, then load every product's current version (problems are logged, not fatal)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith((TMP_PREFIX, TRASH_PREFIX)):
                log.warning("removing debris of an interrupted write: %s", entry)
                remove_path(entry)
            elif entry.is_dir() and is_valid_product_id(entry.name):
                product = self._load_product(entry, load_references)
                if product is not None:
                    self._products[product.product_id] = product
        log.info("product store %s: %d product(s) loaded", self.root, len(self._products))

    def _load_product(self, folder: Path, load_references: Callable[[Path], ReferenceSet]) -> Product | None:
        for entry in folder.iterdir():
            if entry.name.startswith(TMP_PREFIX) or entry.name.startswith(f".{POINTER}{TMP_PREFIX}"):
                log.warning("removing debris of an interrupted write: %s", entry)
                remove_path(entry)
        pointer_file = folder / POINTER
        if not pointer_file.is_file():
            log.warning("removing %s: its first upload never completed", folder)
            shutil.rmtree(folder, ignore_errors=True)
            return None
        try:
            pointer = json.loads(pointer_file.read_text())
            version = int(pointer["version"])
            version_dir = folder / f"v{version}"
            meta = json.loads((version_dir / PRODUCT_META).read_text())
            refs = load_references(version_dir)
        except Exception as err:  # one unreadable product must not stop the service; its files are kept
            log.error("product %r not loaded (files kept as they are): %s", folder.name, err)
            return None
        remove_other_versions(folder, keep=version)
        return Product(
            product_id=folder.name,
            version=version,
            refs=refs,
            calibration=Calibration.from_dict(meta["calibration"]),
            created_at=meta["created_at"],
            threshold_override=pointer.get("threshold"),
            pixel_threshold_override=pointer.get("pixel_threshold"),
        )

    # --- helpers ---------------------------------------------------------------------------------------------

    def _folder(self, product_id: str) -> Path:
        if not is_valid_product_id(product_id):
            raise ValueError(f"invalid product id {product_id!r}")
        folder = self.root / product_id
        assert folder.resolve().parent == self.root.resolve(), "product folders stay inside the data dir"
        return folder

    @staticmethod
    def _next_version(folder: Path) -> int:
        versions = [int(m.group(1)) for e in folder.iterdir() if (m := VERSION_DIR.fullmatch(e.name))]
        return max(versions, default=0) + 1


def version_dirs(folder: Path) -> dict[int, Path]:
    return {int(m.group(1)): e for e in folder.iterdir() if (m := VERSION_DIR.fullmatch(e.name))}


def remove_other_versions(folder: Path, keep: int) -> None:
    for version, path in version_dirs(folder).items():
        if version != keep:
            shutil.rmtree(path, ignore_errors=True)


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_json_atomic(path: Path, content: dict[str, Any]) -> None:
    """Write a temp file beside `path`, fsync it, rename it over `path`, fsync the folder."""
    tmp = path.parent / f".{path.name}{TMP_PREFIX}{uuid.uuid4().hex}"
    with open(tmp, "w") as handle:
        json.dump(content, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_tree(folder: Path) -> None:
    """fsync every file in `folder` (recursively) and the folders themselves."""
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        elif path.is_dir():
            fsync_dir(path)
    fsync_dir(folder)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
