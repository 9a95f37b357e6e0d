"""Import of the old folder store (DATA_DIR/products, written before the registry moved into the database): each
product's current version, threshold overrides, rules, recalibration and labelled frames become rows and blobs,
once. Runs when the registry's schema is first migrated in a process; products already imported (the
`legacy_imports` table: a product deleted since is not imported again) or already in the registry are skipped, and
the old folders are left untouched (read only).

    products/<id>/current.json      {"version": N, "uid": str, "generation": G, "threshold", "pixel_threshold"}
    products/<id>/v<N>/             ReferenceSet files + product.json {"calibration", "created_at"}
    products/<id>/rules.json        {"rules": null|{...}, "rules_version": M}
    products/<id>/calibration.json  {"uid", "calibration"}: recalibrated thresholds of version `uid`
    products/<id>/frames/index.json {"frames": [LabelledFrame fields, ...]}, files frames/<frame_id>.img
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from service.products.frames import LabelledFrame, frame_row
from service.products.store import Importer, ProductStore, is_valid_product_id, product_key, tar_folder, utc_now
from service.records.tables import labelled_frames, legacy_imports, product_versions, products

log = logging.getLogger(__name__)

POINTER = "current.json"
PRODUCT_META = "product.json"


def folder_importer(folder: Path) -> Importer:
    """The importer of the old store in `folder` (DATA_DIR/products), for ProductStore(importer=)."""
    return lambda store: import_folder_store(store, folder)


def import_folder_store(store: ProductStore, folder: Path) -> tuple[int, int, int]:
    """Import every product of the old store in `folder` not imported yet; returns (imported, skipped, failed) and
    logs them in one line. A product that cannot be read is logged and left for the next start. Raises SQLAlchemy's
    errors when the database does not answer."""
    try:
        names = sorted(n for n in os.listdir(folder) if is_valid_product_id(n) and (folder / n / POINTER).is_file())
    except (FileNotFoundError, NotADirectoryError):
        return 0, 0, 0
    with store.engine.connect() as c:
        done = set(c.execute(select(legacy_imports.c.product_id)).scalars())
    counts = {"imported": 0, "skipped": len(set(names) & done), "failed": 0}
    for product_id in (n for n in names if n not in done):
        try:
            counts["imported" if import_product(store, folder / product_id) else "skipped"] += 1
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.error("old product store: %r not imported (its folder is kept as it is): %s", product_id, err)
            counts["failed"] += 1
    if names:
        log.info(
            "old product store %s: %d product(s) imported, %d skipped (imported before or in the registry), %d failed",
            folder,
            counts["imported"],
            counts["skipped"],
            counts["failed"],
        )
    return counts["imported"], counts["skipped"], counts["failed"]


def import_product(store: ProductStore, folder: Path) -> bool:
    """Import one product folder (blobs first, then one transaction); False when the registry had it already."""
    product_id = folder.name
    pointer = json.loads((folder / POINTER).read_text())
    version = int(pointer["version"])
    uid = str(pointer.get("uid") or f"v{version}")
    version_dir = folder / f"v{version}"
    meta = json.loads((version_dir / PRODUCT_META).read_text())
    bank = tar_folder(version_dir, sorted(p.name for p in version_dir.iterdir() if p.name != PRODUCT_META))
    rules = _json(folder / "rules.json") or {}
    recalibration = _json(folder / "calibration.json") or {}
    frames = [replace(f, sha256=store.blobs.put(data), file_bytes=len(data)) for f, data in _frames(folder)]
    bank_sha256 = store.blobs.put(bank)
    now = utc_now()
    row = {
        "product_id": product_id,
        "product_key": product_key(product_id),
        "version": version,
        "uid": uid,
        "generation": int(pointer.get("generation", 0)) + 1,
        "threshold": pointer.get("threshold"),
        "pixel_threshold": pointer.get("pixel_threshold"),
        "rules": rules.get("rules"),
        "rules_version": int(rules.get("rules_version", 0)),
        "recalibration": recalibration.get("calibration") if recalibration.get("uid") == uid else None,
        "created": now,
        "updated": now,
    }
    version_row = {"product_id": product_id, "version": version, "uid": uid, "bank_sha256": bank_sha256}
    version_row |= {"bank_bytes": len(bank), "calibration": meta["calibration"], "created_at": meta["created_at"]}
    try:
        with store.engine.begin() as c:
            c.execute(insert(legacy_imports).values(product_id=product_id, uid=uid, imported=now))
            query = select(products.c.product_id).where(products.c.product_key == product_key(product_id))
            if c.execute(query).first() is not None:
                return False  # created in the registry (or a case twin): the registry's stands
            c.execute(insert(products).values(**row))
            c.execute(insert(product_versions).values(**version_row))
            if frames:
                c.execute(insert(labelled_frames), [frame_row(product_id, i, f) for i, f in enumerate(frames)])
    except IntegrityError:
        return False  # another replica imported it at the same moment
    return True


def _json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def _frames(folder: Path) -> list[tuple[LabelledFrame, bytes]]:
    """The labelled frames of the old index whose files are there (a missing file drops its frame)."""
    index = _json(folder / "frames" / "index.json") or {"frames": []}
    kept = []
    for raw in index["frames"]:
        frame = LabelledFrame(**raw)
        try:
            kept.append((frame, (folder / "frames" / f"{frame.frame_id}.img").read_bytes()))
        except FileNotFoundError:
            log.warning("old product store: labelled frame %s of %r has no file; not imported", frame.frame_id,
                        folder.name)  # fmt: skip
    return kept
