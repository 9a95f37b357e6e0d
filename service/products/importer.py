"""Import of the old folder store (DATA_DIR/products, read by service.products.legacy) into the registry: each
product's current version, threshold overrides, rules, recalibration and labelled frames become rows and blobs,
once. Runs when a process first reaches the database (ProductStore's importer). A product imported before (the
`legacy_imports` table: one deleted since is not imported again) or already in the registry is skipped; one that
cannot be read is logged and tried again at the next start. The old folders are never written.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from service.products.frames import LabelledFrame, frame_row
from service.products.legacy import REFERENCE_FILES, LegacyFrame, LegacyProduct, read_folder_store
from service.products.store import Importer, ProductStore, product_key, tar_folder, utc_now
from service.records.tables import labelled_frames, legacy_imports, product_versions, products

log = logging.getLogger(__name__)


def folder_importer(data_dir: Path) -> Importer:
    """The importer of the old store in `data_dir`/products, for ProductStore(importer=)."""
    return lambda store: import_folder_store(store, data_dir)


def import_folder_store(store: ProductStore, data_dir: Path) -> tuple[int, int, int]:
    """Import every product of the old store in `data_dir` not imported yet; returns (imported, skipped, failed),
    logged in one line when there is an old store. Raises SQLAlchemy's errors when the database does not answer,
    OSError when the products folder cannot be listed."""
    with store.engine.connect() as c:
        done = set(c.execute(select(legacy_imports.c.product_id)).scalars())
    counts = {"imported": 0, "skipped": 0, "failed": 0}
    for product in read_folder_store(data_dir):
        if product.product_id in done:
            counts["skipped"] += 1
        elif not product.importable:
            log.error("old product store: %r not imported (its folder is kept): %s", product.product_id,
                      "; ".join(product.problems))  # fmt: skip
            counts["failed"] += 1
        else:
            if product.problems:
                log.warning("old product store: %r imported without: %s", product.product_id,
                            "; ".join(product.problems))  # fmt: skip
            counts["imported" if import_product(store, product) else "skipped"] += 1
    if any(counts.values()):
        log.info(
            "old product store %s: %d product(s) imported, %d skipped (imported before or in the registry), %d failed",
            Path(data_dir) / "products",
            counts["imported"],
            counts["skipped"],
            counts["failed"],
        )
    return counts["imported"], counts["skipped"], counts["failed"]


def import_product(store: ProductStore, product: LegacyProduct) -> bool:
    """Import one importable product (blobs first, then one transaction); False when the registry had it already
    (or another replica imported it at the same moment)."""
    assert product.references is not None and product.calibration is not None, "importable products only"
    product_id, uid, now = product.product_id, str(product.uid), utc_now()
    frames = [labelled(frame, store) for frame in product.frames]
    bank = tar_folder(product.references, sorted(REFERENCE_FILES))  # the layout ProductStore's bank_blob writes
    row = {
        "product_id": product_id,
        "product_key": product_key(product_id),
        "version": product.version,
        "uid": uid,
        "generation": product.generation + 1,
        "threshold": product.threshold_override,
        "pixel_threshold": product.pixel_threshold_override,
        "rules": None if product.rules is None else product.rules.model_dump(exclude_none=True),
        "rules_version": product.rules_version,
        "recalibration": None if product.recalibration is None else product.recalibration.to_dict(),
        "created": now,
        "updated": now,
    }
    version_row = {
        "product_id": product_id,
        "version": product.version,
        "uid": uid,
        "bank_sha256": store.blobs.put(bank),
        "bank_bytes": len(bank),
        "calibration": product.calibration.to_dict(),
        "created_at": product.created_at,
    }
    try:
        with store.engine.begin() as c:
            c.execute(insert(legacy_imports).values(product_id=product_id, uid=uid, imported=now))
            query = select(products.c.product_id).where(products.c.product_key == product_key(product_id))
            if c.execute(query).first() is not None:
                return False  # created in the registry meanwhile (or a case twin): the registry's stands
            c.execute(insert(products).values(**row))
            c.execute(insert(product_versions).values(**version_row))
            if frames:
                c.execute(insert(labelled_frames), [frame_row(product_id, i, f) for i, f in enumerate(frames)])
    except IntegrityError:
        return False
    return True


def labelled(frame: LegacyFrame, store: ProductStore) -> LabelledFrame:
    """An old labelled frame with its image stored as a blob."""
    data = frame.image.read_bytes()
    return LabelledFrame(
        frame.frame_id,
        frame.label,  # type: ignore[arg-type]  # checked by the reader: "good" | "defect"
        frame.source,  # type: ignore[arg-type]
        frame.time,
        frame.filename,
        frame.inspection_id,
        frame.score,
        frame.map_max,
        frame.version,
        frame.pixel_hash,
        sha256=store.blobs.put(data),
        file_bytes=len(data),
    )
