"""Memory bank: FAISS search equals brute force; reduction respects the budget; save/load."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from model.bank import MemoryBank, greedy_coreset, max_cosine


def test_search_equals_brute_force():
    torch.manual_seed(0)
    tokens, queries = torch.randn(500, 32), torch.randn(4, 60, 32)
    bank = MemoryBank(tokens)
    expected = (F.normalize(queries, dim=-1) @ F.normalize(tokens, dim=-1).T).amax(dim=-1)  # (4, 60)
    got = bank.max_similarity(queries)
    assert got.shape == (4, 60)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_device_path_matches_faiss_path():
    torch.manual_seed(1)
    bank = MemoryBank(torch.randn(300, 16))
    queries = torch.randn(50, 16)
    faiss_result = bank.max_similarity(queries)
    matmul_result = (F.normalize(queries, dim=-1) @ bank._on(torch.device("cpu")).T).amax(dim=1)
    torch.testing.assert_close(faiss_result, matmul_result, rtol=1e-5, atol=1e-5)


def test_query_in_bank_has_similarity_one():
    tokens = torch.randn(100, 8)
    assert torch.allclose(MemoryBank(tokens).max_similarity(tokens[:10]), torch.ones(10), atol=1e-5)


def test_build_reduces_to_budget_by_coreset_and_kmeans():
    tokens = torch.randn(600, 16)
    for method in ("coreset", "kmeans"):
        bank = MemoryBank.build(tokens, budget=100, reduction=method)
        assert len(bank) == 100 and bank.dim == 16
    assert len(MemoryBank.build(tokens, budget=1000)) == 600


def test_coreset_picks_distinct_points_and_covers_outliers():
    tokens = torch.cat([torch.randn(200, 8) * 0.01, torch.full((1, 8), 50.0)])
    chosen = greedy_coreset(tokens, 10)
    assert len(set(chosen.tolist())) == 10
    assert 200 in chosen.tolist()  # the far outlier is always kept


def test_save_and_load_roundtrip(tmp_path):
    bank = MemoryBank(torch.randn(50, 8))
    bank.save(tmp_path / "bank.npy")
    loaded = MemoryBank.load(tmp_path / "bank.npy")
    np.testing.assert_array_equal(bank.tokens.numpy(), loaded.tokens.numpy())


def test_one_max_cosine_for_a_shared_bank_and_for_each_querys_own():
    generator = torch.Generator().manual_seed(0)
    queries = torch.randn(3, 20, 8, generator=generator)  # (B, Q, D)
    own = F.normalize(torch.randn(3, 50, 8, generator=generator), dim=-1)  # (B, M, D): each query's own bank
    best = max_cosine(queries, own, chunk=7)  # chunks smaller than Q: the result does not depend on them
    brute = torch.stack([(F.normalize(q, dim=-1) @ k.T).amax(dim=1) for q, k in zip(queries, own, strict=True)])
    torch.testing.assert_close(best, brute)
    shared = MemoryBank(own[0])
    torch.testing.assert_close(max_cosine(queries[0], shared.tokens), shared.max_similarity(queries[0]))
