"""DeviceCache: per-product tensors copied to the accelerator (reference tokens, memory banks), kept in an LRU
bounded by bytes. An evicted entry is copied again from host memory (the ReferenceSet keeps the CPU originals)
on its next use, so device memory stays bounded however many products are served."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

import torch

Tensors = tuple[torch.Tensor, ...]


def tensors_nbytes(tensors: Tensors) -> int:
    """Total bytes of the tensors' elements."""
    return sum(t.element_size() * t.nelement() for t in tensors)


class DeviceCache:
    """LRU of device tensors, `budget_bytes` at most. An entry larger than the whole budget is not kept (it is
    used once and freed). Thread-safe. `loads` / `evictions` count copies to the device and entries dropped."""

    def __init__(self, budget_bytes: int) -> None:
        if budget_bytes < 0:
            raise ValueError(f"budget_bytes must be >= 0, got {budget_bytes}")
        self.budget_bytes = budget_bytes
        self.used_bytes = 0
        self.loads = 0
        self.evictions = 0
        self._entries: OrderedDict[Hashable, tuple[Tensors, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def get(self, key: Hashable, load: Callable[[], Tensors]) -> Tensors:
        """The cached tensors of `key` (now the most recently used), or `load()`'s, cached within the budget."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key][0]
        tensors = load()
        size = tensors_nbytes(tensors)
        with self._lock:
            self.loads += 1
            if size > self.budget_bytes or key in self._entries:
                return tensors
            self._entries[key] = (tensors, size)
            self.used_bytes += size
            while self.used_bytes > self.budget_bytes:
                _, (_, evicted) = self._entries.popitem(last=False)  # the least recently used
                self.used_bytes -= evicted
                self.evictions += 1
        return tensors

    def clear(self) -> None:
        """Drop every entry and reset `used_bytes` (the `loads` and `evictions` counters are kept)."""
        with self._lock:
            self._entries.clear()
            self.used_bytes = 0
