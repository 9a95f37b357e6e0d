"""The blob garbage collector: a thread that removes, every `interval_s`, the blobs no product row names any more
once they are older than the grace period (ProductStore.collect_garbage)."""

from __future__ import annotations

import logging
import threading

from service.errors import Unavailable
from service.products.store import ProductStore, StoreUnavailable

log = logging.getLogger(__name__)


class BlobCollector:
    """The background thread calling `store.collect_garbage(grace_s)` every `interval_s` seconds."""

    def __init__(self, store: ProductStore, grace_s: float, interval_s: float) -> None:
        self.store = store
        self.grace_s = grace_s
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="blob-collector", daemon=True)

    def start(self) -> None:
        """Start the thread (its first collection is one interval from now)."""
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the thread to stop and wait up to `timeout_s` for it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.store.collect_garbage(self.grace_s)
            except (Unavailable, StoreUnavailable):
                continue  # logged by the store; tried again next interval
            except Exception:
                log.exception("blob garbage collection failed")
