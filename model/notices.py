"""Warnings about frames that would repeat on every frame of a product: logged once per reference set and kind."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass

log = logging.getLogger("model")

KINDS = ("aspect", "bit-depth")  # every notice kind: a frame of another aspect, data above the bit depth
REMEMBERED = 4096  # (reference set, kind) pairs remembered at most; an older one may be logged again


@dataclass(frozen=True)
class Notice:
    """Something about a frame worth a warning once per product: `kind` groups notices of the same cause."""

    kind: str
    message: str


class OnceLog:
    """Logs each notice kind once per reference set (thread-safe; bounded memory)."""

    def __init__(self, remembered: int = REMEMBERED) -> None:
        self.remembered = remembered
        self._seen: OrderedDict[tuple[int, str], None] = OrderedDict()
        self._lock = threading.Lock()

    def warn(self, references_key: int, notices: list[Notice]) -> None:
        """Log each notice whose kind was not logged yet for the reference set `references_key`."""
        for notice in notices:
            key = (references_key, notice.kind)
            with self._lock:
                if key in self._seen:
                    continue
                self._seen[key] = None
                if len(self._seen) > self.remembered:
                    self._seen.popitem(last=False)
            log.warning("%s (logged once per product)", notice.message)
