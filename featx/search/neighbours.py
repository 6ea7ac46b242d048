"""Nearest neighbours by cosine similarity, with FAISS: exact when it fits, an IVF index when not.

    found = nearest(queries, base, k=5)          # exact: found.sims [n, k], found.ids [n, k]
    found = self_neighbours(source, k=10)        # every row against every other row, streamed
    pairs = hamming_pairs(codes, max_bits=4)     # 64-bit pixel hashes closer than max_bits

`source` is anything with `rows` (how many), `dim` and `read(start, stop)` returning float rows
[stop - start, D]: a store read block by block (featx.audit.StoreRows) or an array (ArrayRows).
Exact search holds the unit features in memory (N x D float32) and compares every pair through
BLAS; above EXACT_MAX_ROWS that is hours on a laptop CPU and more memory than it has, so the
search becomes approximate: an uncentred PCA to PROJECTED_DIM dimensions (most of the energy of
deep features, stated in `method`) and an inverted file (IVF, nprobe lists searched per query).
Only the index (N x PROJECTED_DIM float32) lives in memory; the features stream in blocks, twice.

faiss is imported inside the functions: loading a head (featx.heads.scoring) must stay light.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

EXACT_MAX_ROWS = 50_000  # all pairs of 50k x 1280: ~1 min on a 2-core CPU; 1M rows would take days
PROJECTED_DIM = 128  # IVF works on this many uncentred principal components of the unit features
TRAIN_ROWS = 65_536  # rows (in evenly spaced spans) that fit the projection and the IVF centroids
NPROBE = 10  # inverted lists searched per query (of about 4 sqrt(N))
PCA_ROWS = 16_384  # of the training rows, for the 1280 x 1280 moment matrix
BLOCK_ROWS = 16_384


class Rows(Protocol):
    rows: int
    dim: int

    def read(self, start: int, stop: int) -> np.ndarray: ...


@dataclass
class ArrayRows:
    """An in-memory array as a `Rows` source."""

    x: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.x)

    @property
    def dim(self) -> int:
        return int(self.x.shape[1])

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.x[start:stop]

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self.x[rows]


@dataclass
class Neighbours:
    """The k nearest rows of each query: ids [n, k] (-1 where there are fewer) and cosine sims."""

    ids: np.ndarray  # [n, k] int64
    sims: np.ndarray  # [n, k] float32, descending along each row
    method: str  # how they were found, for reports: "exact (...)" or "IVF... (approximate)"


def unit(x: np.ndarray) -> np.ndarray:
    """Rows as float32 of unit length (all-zero rows stay zero), contiguous for FAISS."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def nearest(queries: np.ndarray, base: np.ndarray, k: int) -> Neighbours:
    """Exact k nearest rows of `base` for each query row, by cosine similarity."""
    import faiss

    k = min(k, len(base))
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(unit(base))
    sims, ids = index.search(unit(queries), k) if k else (np.zeros((len(queries), 0), np.float32),
                                                           np.zeros((len(queries), 0), np.int64))
    return Neighbours(ids.astype(np.int64), sims, "exact (faiss IndexFlatIP)")


def self_neighbours(source: Rows, k: int, method: str = "auto", advance=None) -> Neighbours:
    """The k nearest other rows of every row of `source` (itself left out).

    method: "exact", "ivf" or "auto" (exact up to EXACT_MAX_ROWS rows). `advance(n)` is called
    as rows are searched (a progress bar).
    """
    n = source.rows
    k = max(0, min(k, n - 1))
    if method == "auto":
        method = "exact" if n <= EXACT_MAX_ROWS else "ivf"
    if method == "exact":
        return _exact_self(source, k, advance)
    if method == "ivf":
        return _ivf_self(source, k, advance)
    raise ValueError(f"unknown search method {method!r} (use auto, exact or ivf)")


def _exact_self(source: Rows, k: int, advance) -> Neighbours:
    import faiss

    n = source.rows
    base = np.empty((n, source.dim), np.float32)  # (N, D) unit rows
    for start in range(0, n, BLOCK_ROWS):
        stop = min(n, start + BLOCK_ROWS)
        base[start:stop] = unit(source.read(start, stop))
    index = faiss.IndexFlatIP(source.dim)
    index.add(base)
    return _search_self(index, lambda a, b: base[a:b], n, k, advance, "exact (faiss IndexFlatIP)")


def _ivf_self(source: Rows, k: int, advance) -> Neighbours:
    import faiss

    n, dim = source.rows, source.dim
    sample = unit(_spread_sample(source, TRAIN_ROWS))
    proj, energy = uncentred_pca(sample[::max(1, len(sample) // PCA_ROWS)], min(PROJECTED_DIM, dim))
    nlist = int(min(max(1, 4 * np.sqrt(n)), len(sample) // 39 or 1))  # faiss wants >= 39 per list
    quantizer = faiss.IndexFlatIP(proj.shape[1])
    index = faiss.IndexIVFFlat(quantizer, proj.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = 10  # k-means iterations (faiss: 25); the lists only need to be roughly balanced
    index.train(np.ascontiguousarray(sample @ proj))
    for start in range(0, n, BLOCK_ROWS):  # pass 1: fill the index
        stop = min(n, start + BLOCK_ROWS)
        index.add(np.ascontiguousarray(unit(source.read(start, stop)) @ proj))
    index.nprobe = min(NPROBE, nlist)
    method = (f"IVF{nlist} over {proj.shape[1]} uncentred principal components ({energy:.1%} of the "
              f"energy), nprobe {index.nprobe} (approximate)")
    # pass 2: every row is a query
    return _search_self(index, lambda a, b: np.ascontiguousarray(unit(source.read(a, b)) @ proj),
                        n, k, advance, method)


def _search_self(index, block, n: int, k: int, advance, method: str) -> Neighbours:
    ids = np.full((n, k), -1, np.int64)
    sims = np.full((n, k), -np.inf, np.float32)
    for start in range(0, n, BLOCK_ROWS):
        stop = min(n, start + BLOCK_ROWS)
        s, i = index.search(block(start, stop), k + 1)  # one extra: the row itself
        own = np.arange(start, stop)[:, None]
        keep = i != own
        # drop the row itself where found, else the last (k+1-th) neighbour
        keep[keep.all(1), -1] = False
        ids[start:stop] = i[keep].reshape(stop - start, k)
        sims[start:stop] = s[keep].reshape(stop - start, k)
        if advance:
            advance(stop - start)
    return Neighbours(ids, sims, method)


def _spread_sample(source: Rows, size: int) -> np.ndarray:
    """Up to `size` rows, read as 64 evenly spaced contiguous spans (cheap from a chunked file)."""
    n = source.rows
    if n <= size:
        return np.concatenate([source.read(a, min(n, a + BLOCK_ROWS)) for a in range(0, n, BLOCK_ROWS)])
    span = size // 64
    starts = np.linspace(0, n - span, 64).astype(np.int64)
    return np.concatenate([source.read(int(a), int(a) + span) for a in starts])


def uncentred_pca(x: np.ndarray, dim: int) -> tuple[np.ndarray, float]:
    """The top `dim` eigenvectors [D, dim] of x'x (not centred: inner products of the projected
    rows approximate those of the rows) and the share of the energy they keep."""
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    values, vectors = np.linalg.eigh((x32.T @ x32).astype(np.float64))  # ascending
    top = vectors[:, ::-1][:, :dim].astype(np.float32)
    return top, float(values[::-1][:dim].sum() / max(values.sum(), 1e-12))


def hamming_pairs(codes: np.ndarray, max_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) of rows whose binary codes [n, B] uint8 differ in at most `max_bits` bits,
    and those distances. Exact (faiss IndexBinaryFlat range search)."""
    import faiss

    n = len(codes)
    if n < 2 or max_bits < 0:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
    index = faiss.IndexBinaryFlat(codes.shape[1] * 8)
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    index.add(codes)
    lims, dist, ids = index.range_search(codes, max_bits + 1)  # radius is strict: < max_bits + 1
    rows = np.repeat(np.arange(n), np.diff(lims.astype(np.int64)))
    keep = rows < ids
    return np.stack([rows[keep], ids[keep]], 1).astype(np.int64), dist[keep].astype(np.int64)


def take_rows(source: Rows, rows: np.ndarray) -> np.ndarray:
    """Rows `rows` (increasing) of `source`, through its `take` when it has one."""
    take = getattr(source, "take", None)
    if take is not None:
        return take(rows)
    return np.concatenate([source.read(int(r), int(r) + 1) for r in rows]) if len(rows) else \
        np.zeros((0, source.dim), np.float32)


def pair_cosines(source: Rows, pairs: np.ndarray) -> np.ndarray:
    """Exact cosine of each pair (i, j) of rows [p, 2], reading only the rows involved."""
    if not len(pairs):
        return np.zeros(0, np.float32)
    needed, where = np.unique(pairs, return_inverse=True)
    x = unit(take_rows(source, needed))  # (u, D)
    where = where.reshape(pairs.shape)
    return (x[where[:, 0]] * x[where[:, 1]]).sum(1)


def nearest_streamed(queries: np.ndarray, source: Rows, k: int, advance=None) -> Neighbours:
    """Exact k nearest rows of `source` for a few queries, reading `source` block by block
    (memory: one block, whatever the store's size)."""
    import faiss

    q = unit(queries)
    ids = np.full((len(q), 0), -1, np.int64)
    sims = np.full((len(q), 0), -np.inf, np.float32)
    for start in range(0, source.rows, BLOCK_ROWS):
        stop = min(source.rows, start + BLOCK_ROWS)
        index = faiss.IndexFlatIP(source.dim)
        index.add(unit(source.read(start, stop)))
        s, i = index.search(q, min(k, stop - start))
        sims, ids = np.concatenate([sims, s], 1), np.concatenate([ids, i + start], 1)
        best = np.argsort(-sims, axis=1, kind="stable")[:, :k]  # merge: keep the k best so far
        sims, ids = np.take_along_axis(sims, best, 1), np.take_along_axis(ids, best, 1)
        if advance:
            advance(stop - start)
    return Neighbours(ids, sims, "exact (faiss IndexFlatIP, streamed blocks)")
