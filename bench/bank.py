"""Memory-bank search: FAISS (exact inner product, the CPU path) vs a torch matmul (the accelerator path)."""

from __future__ import annotations

import argparse

import faiss
import torch
import torch.nn.functional as F

from bench.common import Section, interleaved, p50
from model.bank import MemoryBank

QUERIES = 1024  # one edge/paper frame: a 32 x 32 DINOv2 grid
DIM = 384  # DINOv2 ViT-S (edge); the paper's ViT-L has 1024


def run(args: argparse.Namespace) -> Section:
    """Time `MemoryBank.max_similarity` (FAISS) against `torch_search` for banks of 4k to 1M tokens
    (1M not with --quick); p50 ms."""
    section = Section("bank", f"bank search, {QUERIES} query tokens x D={DIM} (ms, interleaved)")
    sizes = [4096, 16384, 65536, 262144] + ([] if args.quick else [1048576])
    section.rows.append(f"{'bank tokens':>12} {'FAISS':>9} {'torch':>9} {'torch/FAISS':>12}")
    generator = torch.Generator().manual_seed(0)
    queries = F.normalize(torch.randn(QUERIES, DIM, generator=generator), dim=-1)  # (Q, D)
    rows = []
    for m in sizes:
        bank = MemoryBank(torch.randn(m, DIM, generator=generator))  # (M, D)
        times = interleaved(
            {"faiss": lambda b=bank: b.max_similarity(queries), "torch": lambda b=bank: torch_search(b, queries)},
            repeats=max(2, args.repeats // (1 + m // 65536)),
        )
        rows.append({"tokens": m, "faiss_ms": p50(times["faiss"]), "torch_ms": p50(times["torch"])})
        section.rows.append(
            f"{m:12d} {rows[-1]['faiss_ms']:9.1f} {rows[-1]['torch_ms']:9.1f} "
            f"{rows[-1]['torch_ms'] / rows[-1]['faiss_ms']:11.2f}x"
        )
    section.data = {"queries": QUERIES, "dim": DIM, "faiss_threads": faiss.omp_get_max_threads(), "rows": rows}
    return section


def torch_search(bank: MemoryBank, queries: torch.Tensor) -> torch.Tensor:
    """The accelerator path of MemoryBank.max_similarity, run on the CPU: chunked matmul + max."""
    return torch.cat([(chunk @ bank.tokens.T).amax(dim=1) for chunk in queries.split(4096)])  # (Q,)
