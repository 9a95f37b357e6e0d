"""DeviceCache: per-product device tensors in an LRU bounded by bytes; evicted entries reload from host memory."""

from __future__ import annotations

import pytest
import torch

from model.bank import MemoryBank
from model.device_cache import DeviceCache
from model.references import ReferenceSet

KIB = 1024


def loader(calls: list[str], name: str, n_floats: int):
    def load() -> tuple[torch.Tensor, ...]:
        calls.append(name)
        return (torch.zeros(n_floats, dtype=torch.float32),)  # 4 bytes each

    return load


def test_bytes_are_accounted_and_the_least_recently_used_goes_first():
    cache, calls = DeviceCache(budget_bytes=3 * KIB), []
    for name in ("a", "b", "c"):
        cache.get(name, loader(calls, name, 256))  # 1 KiB each: exactly the budget
    assert cache.used_bytes == 3 * KIB and len(cache) == 3 and cache.evictions == 0
    cache.get("a", loader(calls, "a", 256))  # a hit: a becomes the most recently used
    assert calls == ["a", "b", "c"]
    cache.get("d", loader(calls, "d", 256))  # over budget: b (least recently used) goes
    assert "b" not in cache and {"a", "c", "d"} == {k for k in ("a", "b", "c", "d") if k in cache}
    assert cache.used_bytes == 3 * KIB and cache.evictions == 1


def test_an_evicted_entry_reloads_on_its_next_use():
    cache, calls = DeviceCache(budget_bytes=2 * KIB), []
    first = cache.get("a", loader(calls, "a", 256))
    cache.get("b", loader(calls, "b", 256))
    cache.get("c", loader(calls, "c", 256))  # evicts a
    again = cache.get("a", loader(calls, "a", 256))  # evicts b, copies a again
    assert calls == ["a", "b", "c", "a"] and cache.loads == 4 and cache.evictions == 2
    assert again[0] is not first[0] and torch.equal(again[0], first[0])
    assert cache.used_bytes == 2 * KIB


def test_a_large_entry_evicts_as_many_as_needed_and_one_over_budget_is_not_kept():
    cache, calls = DeviceCache(budget_bytes=4 * KIB), []
    for name in ("a", "b", "c", "d"):
        cache.get(name, loader(calls, name, 256))
    cache.get("big", loader(calls, "big", 768))  # 3 KiB: a, b and c go
    assert [k for k in ("a", "b", "c", "d", "big") if k in cache] == ["d", "big"]
    assert cache.used_bytes == 4 * KIB
    huge = cache.get("huge", loader(calls, "huge", 2048))  # 8 KiB > the budget: used once, not kept
    assert huge[0].nelement() == 2048 and "huge" not in cache and cache.used_bytes == 4 * KIB


def test_negative_budget_is_refused():
    with pytest.raises(ValueError, match="budget_bytes"):
        DeviceCache(-1)


def references(n: int = 2, side: int = 4, width: int = 8) -> ReferenceSet:
    patches = torch.randn(n * side * side, width)  # (N, Dd): n references on a side x side grid each
    meta = {"grids": [[side, side]] * n}
    return ReferenceSet("tiny", "fp", patches, patches.view(n, -1, width).mean(1), MemoryBank(patches), meta)


def test_reference_tokens_and_banks_go_through_the_cache_on_an_accelerator():
    device = torch.device("meta")  # not the CPU: copies are made (and accounted) as on a GPU, without one
    refs, other = references(), references()
    per_product = 4 * (2 * 16 * 8 + 2 * 8)  # patch + class tokens, float32
    cache = DeviceCache(budget_bytes=per_product)
    patch, cls = refs.tokens_on(device, cache)
    assert patch.device == device and cls.shape == (2, 8) and cache.used_bytes == per_product
    assert refs.tokens_on(device, cache)[0] is patch  # cached: no second copy
    other.tokens_on(device, cache)  # the budget holds one product: refs' tokens are evicted
    assert cache.evictions == 1 and refs.tokens_on(device, cache)[0] is not patch  # reloaded from host memory
    bank_cache = DeviceCache(budget_bytes=1024**2)
    assert refs.bank._on(device, bank_cache).shape == (32, 8) and len(bank_cache) == 1
    assert refs.bank._on(device, bank_cache) is refs.bank._on(device, bank_cache)


def test_on_the_cpu_nothing_is_copied_or_cached():
    refs, cache = references(), DeviceCache(budget_bytes=1024**2)
    patch, _ = refs.tokens_on(torch.device("cpu"), cache)
    assert patch.data_ptr() == refs.patch_tokens.data_ptr() and len(cache) == 0  # a view: no copy
    assert refs.bank._on(torch.device("cpu"), cache) is refs.bank.tokens
