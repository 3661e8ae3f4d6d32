"""Exact duplicates (same content hash) and near duplicates (close perceptual hashes or
embeddings, confirmed on pixels), within a split and across train and test.

Near duplicates are found in two steps: a faiss index proposes every pair within `radius` bits
of pHash (a binary flat index: exact Hamming search, no approximation) or above a cosine
similarity of model embeddings (an inner-product flat index); each proposal is then confirmed
when the two 16×16 grey thumbnails differ by at most `pixel_tolerance` grey levels on average.
The confirmation removes the pHash collisions of plain, low-detail images (Fashion-MNIST's bags
and shirts) while a re-encoded or resized copy, which changes a few grey levels, passes.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from yingshe.errors import require
from yingshe.health.hashing import phash_bits

RADIUS = 10  # pHash bits
PIXEL_TOLERANCE = 6.0  # mean absolute difference of 16×16 grey thumbnails, in grey levels


@dataclass
class Pair:
    a: int  # rows of the scan
    b: int
    distance: float  # Hamming bits, or 1 − cosine with embeddings
    pixel_difference: float


def faiss_module():
    """faiss, or an error that says how to install it (the `health` extra)."""
    return require("faiss", "health", "`data check`")


def exact_groups(hashes: list[str], usable: np.ndarray) -> list[list[int]]:
    """Rows that share a content hash, groups of two or more, in row order."""
    by_hash: dict[str, list[int]] = defaultdict(list)
    for row, digest in enumerate(hashes):
        if usable[row]:
            by_hash[digest].append(row)
    return [rows for rows in by_hash.values() if len(rows) > 1]


def small_thumbnails(thumbs: np.ndarray) -> np.ndarray:
    """(N, 16, 16) float32 from the 32×32 thumbnails (2×2 means), for the pixel confirmation."""
    n = len(thumbs)
    return thumbs.reshape(n, 16, 2, 16, 2).astype(np.float32).mean(axis=(2, 4))


def hash_candidates(bits: np.ndarray, queries: np.ndarray, base: np.ndarray, radius: int):
    """(query row, base row, distance) of every base hash within `radius` bits of a query."""
    index = faiss_module().IndexBinaryFlat(bits.shape[1] * 8)
    index.add(np.ascontiguousarray(bits[base]))
    limits, distances, found = index.range_search(np.ascontiguousarray(bits[queries]), radius + 1)
    counts = np.diff(limits).astype(np.int64)
    q = np.repeat(queries, counts)
    return q, base[found.astype(np.int64)], distances.astype(np.float32)


def embedding_candidates(vectors: np.ndarray, queries: np.ndarray, base: np.ndarray, similarity: float):
    """(query row, base row, 1 − cosine) of every pair above a cosine `similarity`."""
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    index = faiss_module().IndexFlatIP(unit.shape[1])
    index.add(np.ascontiguousarray(unit[base], dtype=np.float32))
    limits, sims, found = index.range_search(
        np.ascontiguousarray(unit[queries], dtype=np.float32), similarity
    )
    q = np.repeat(queries, np.diff(limits).astype(np.int64))
    return q, base[found.astype(np.int64)], (1 - sims).astype(np.float32)


def near_pairs(
    thumbs: np.ndarray,
    hashes: list[str],
    queries: np.ndarray,
    base: np.ndarray,
    same_set: bool,
    radius: int = RADIUS,
    pixel_tolerance: float = PIXEL_TOLERANCE,
    embeddings: np.ndarray | None = None,
    similarity: float = 0.95,
    bits: np.ndarray | None = None,
) -> list[Pair]:
    """Confirmed near (not exact) duplicate pairs between `queries` and `base` rows; with
    `same_set` (a split against itself) each unordered pair once and no self-pairs."""
    if len(queries) == 0 or len(base) == 0:
        return []
    if embeddings is not None:
        q, b, dist = embedding_candidates(embeddings, queries, base, similarity)
    else:
        bits = phash_bits(thumbs) if bits is None else bits
        q, b, dist = hash_candidates(bits, queries, base, radius)
    keep = (q < b) if same_set else np.ones(len(q), dtype=bool)
    q, b, dist = q[keep], b[keep], dist[keep]
    small = small_thumbnails(thumbs)
    pairs = []
    for start in range(0, len(q), 200_000):  # bounded memory on large candidate sets
        qs, bs = q[start : start + 200_000], b[start : start + 200_000]
        diff = np.abs(small[qs] - small[bs]).mean(axis=(1, 2))
        for i in np.flatnonzero(diff <= pixel_tolerance):
            a, c = int(qs[i]), int(bs[i])
            if hashes[a] != hashes[c]:  # exact copies are reported as such
                pairs.append(Pair(a, c, float(dist[start + i]), float(diff[i])))
    return pairs
