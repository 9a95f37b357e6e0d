"""Memory bank of normal patch tokens on FAISS: exact inner-product search over L2-normalised tokens."""

from __future__ import annotations

import itertools
from pathlib import Path

import faiss
import numpy as np
import torch
import torch.nn.functional as F

from model.device_cache import DeviceCache

_KEYS = itertools.count()


class MemoryBank:
    """Nearest-normal search: for each query token, the best cosine similarity to any bank token."""

    def __init__(self, tokens: torch.Tensor, normalized: bool = False) -> None:
        assert tokens.ndim == 2, "bank tokens are (M, D)"
        tokens = tokens.detach().float().cpu()
        self.tokens = (tokens if normalized else F.normalize(tokens, dim=-1)).contiguous()  # (M, D)
        self._index = faiss.IndexFlatIP(self.tokens.shape[1])
        self._index.add(self.tokens.numpy())
        self.cache_key = next(_KEYS)  # unique per bank, never reused (unlike id())

    @classmethod
    def build(cls, tokens: torch.Tensor, budget: int, reduction: str = "coreset", seed: int = 0) -> MemoryBank:
        """Bank of `tokens` (M, D); past `budget` tokens, reduced by greedy coreset or k-means."""
        tokens = F.normalize(tokens.detach().float().cpu(), dim=-1)  # (M, D)
        if tokens.shape[0] > budget:
            if reduction == "kmeans":
                tokens = kmeans_centroids(tokens, budget, seed)
            elif reduction == "coreset":
                tokens = tokens[greedy_coreset(tokens, budget, seed)]
            else:
                raise ValueError(f"unknown bank reduction {reduction!r}")
        return cls(tokens)

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def dim(self) -> int:
        """D, the width of the bank's tokens."""
        return self.tokens.shape[1]

    def max_similarity(self, queries: torch.Tensor, cache: DeviceCache | None = None) -> torch.Tensor:
        """Psi: best cosine similarity of each query (..., D) to the bank -> (...), on the queries' device.

        On CPU the search runs in FAISS; on an accelerator the same exact search is one matmul on the device,
        which avoids copying every query token to the host. The bank's device copy is kept in `cache` (a byte-
        bounded LRU shared by every product) when given, else copied for this call only.
        """
        shape = queries.shape[:-1]
        flat = queries.reshape(-1, queries.shape[-1])  # (Q, D)
        if flat.device.type == "cpu":
            normalized = F.normalize(flat.float(), dim=-1)
            best, _ = self._index.search(normalized.contiguous().numpy(), 1)  # (Q, 1)
            return torch.from_numpy(best[:, 0]).reshape(shape)
        return max_cosine(flat, self._on(flat.device, cache)).reshape(shape)  # (Q,) -> (...)

    def _on(self, device: torch.device, cache: DeviceCache | None = None) -> torch.Tensor:
        if device.type == "cpu":
            return self.tokens
        if cache is None:
            return self.tokens.to(device)
        (tokens,) = cache.get(("bank", self.cache_key, device), lambda: (self.tokens.to(device),))
        return tokens

    def save(self, path: Path) -> None:
        """Write the (already L2-normalised) tokens to `path` with
        numpy.save (which adds `.npy` when the name lacks it)."""
        np.save(path, self.tokens.numpy())

    @classmethod
    def load(cls, path: Path) -> MemoryBank:
        """A bank from a file written by `save`; the tokens are taken as already normalised."""
        return cls(torch.from_numpy(np.load(path)), normalized=True)


def max_cosine(queries: torch.Tensor, keys: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Psi, exact: each query's best cosine similarity to any key, as one matmul per `chunk` queries.

    queries (..., Q, D), any scale; keys (..., M, D) L2-normalised, with the queries' leading dims or none (one
    bank for all) -> (..., Q).
    """
    normalized = F.normalize(queries.float(), dim=-1)  # (..., Q, D)
    parts = [(part @ keys.transpose(-1, -2)).amax(dim=-1) for part in normalized.split(chunk, dim=-2)]
    return torch.cat(parts, dim=-1)  # (..., Q)


def greedy_coreset(tokens: torch.Tensor, budget: int, seed: int = 0, projection_dim: int = 128) -> torch.Tensor:
    """Indices of a greedy k-center coreset (PatchCore), on a random projection for speed."""
    generator = torch.Generator().manual_seed(seed)
    n, d = tokens.shape
    if d > projection_dim:
        proj = torch.randn(d, projection_dim, generator=generator) / projection_dim**0.5  # (D, P)
        feats = tokens @ proj  # (M, P)
    else:
        feats = tokens
    chosen = torch.empty(budget, dtype=torch.long)
    chosen[0] = int(torch.randint(n, (1,), generator=generator))
    min_dist = torch.linalg.vector_norm(feats - feats[chosen[0]], dim=1)  # (M,)
    for i in range(1, budget):
        chosen[i] = int(torch.argmax(min_dist))
        dist = torch.linalg.vector_norm(feats - feats[chosen[i]], dim=1)  # (M,)
        min_dist = torch.minimum(min_dist, dist)
    return chosen


def kmeans_centroids(tokens: torch.Tensor, budget: int, seed: int = 0) -> torch.Tensor:
    """`budget` k-means centroids of `tokens` (M, D) with FAISS (spherical: centroids re-normalised)."""
    kmeans = faiss.Kmeans(tokens.shape[1], budget, niter=20, seed=seed, spherical=True, verbose=False)
    kmeans.train(tokens.numpy())
    return torch.from_numpy(kmeans.centroids)
