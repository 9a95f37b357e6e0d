"""Replicas sharing one data dir: a thread that keeps this process's products in step with the disk.

First it loads every stored product (in the background, so the service is ready before they all are; a
request for one not loaded yet loads it on demand), then it calls `ProductStore.refresh` every `poll_s`
seconds: one directory listing and one stat per product's pointer, so new versions, threshold changes,
per-product files and deletions made by other replicas reach this one within `poll_s` (plus the time to
load a new version). See service/products/store.py for what is compared and why that is safe.
"""

from __future__ import annotations

import logging
import threading
import time

from service.products.store import ProductStore

log = logging.getLogger(__name__)


class StoreSync:
    """The background thread that loads every stored product, then refreshes the store every `poll_s` seconds."""

    def __init__(self, store: ProductStore, poll_s: float) -> None:
        self.store = store
        self.poll_s = poll_s
        self.loaded = threading.Event()  # set once the first full load is done
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="store-sync", daemon=True)

    def start(self) -> None:
        """Start the thread (first full load, then polling)."""
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the thread to stop and wait up to `timeout_s` for it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        start = time.perf_counter()
        self._refresh()
        elapsed = time.perf_counter() - start
        log.info("product store: %d product(s) loaded in the background in %.2f s", len(self.store), elapsed)
        self.loaded.set()
        while not self._stop.wait(self.poll_s):
            self._refresh()

    def _refresh(self) -> None:
        try:
            changed = self.store.refresh()
        except Exception:  # a flaky shared volume must not end the sync: try again next poll
            log.exception("product store refresh failed")
            return
        if changed:
            log.info("product store: picked up changes of %s", ", ".join(changed))
