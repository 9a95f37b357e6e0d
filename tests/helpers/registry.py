"""Product stores on the registry's database and blob folder, for tests: SQLite in a data dir, or a PostgreSQL URL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from model import ReferenceSet
from service.products.store import ProductStore
from service.records.blobs import BlobStore
from service.records.database import database_url, open_database


def open_registry(
    data_dir: Path, url: str = "", load_references: Callable[[Path], ReferenceSet] | None = None
) -> ProductStore:
    """A ProductStore as a service on `data_dir` builds it (the database `url`, else SQLite in the data dir), opened
    with `load_references` when given. Two calls on one data dir (and URL) stand for two replicas."""
    (data_dir / "records").mkdir(parents=True, exist_ok=True)
    store = ProductStore(open_database(database_url(url, data_dir)), BlobStore(data_dir / "blobs"))
    if load_references is not None:
        store.open(load_references)
    return store
