"""The k-NN head's search over its reference set: built once per head, reused for every query block.

    tensors = reference_set(blocks, n, dim)      # train_x (unit rows), train_y, index tensors
    index = knn_index(tensors)                   # cached: the same object for every later call
    found = index.search(tensors["train_x"], queries, k)   # found.ids [n, k], found.sims [n, k]

Up to EXACT_MAX_ROWS reference rows the search is exact (faiss IndexFlatIP over the float32
unit rows, the search `featx audit` uses) and the rows are kept in float32: ELPV-size heads give
exactly what they always gave. Above it, an exact search is hours of BLAS on a laptop CPU (150k
queries x 600k rows x 1,280 dims) and the float32 rows alone would be 3 GB, so:

- the rows are kept as float16 unit rows (half the memory and file);
- an inverted file (IVF, 1 list in PROBE_SHARE searched per query) over an uncentred PCA
  projection to PROJECTED_DIM dimensions, held as 8-bit codes (600k rows: 100 MB, where float32
  lists took 450 MB, and twice as fast to scan), proposes RERANK candidates per query, which are
  re-ranked exactly on the full float16 rows: near-exact neighbours, and the head's params say
  so ("neighbours").

The projection, the IVF centroids and the codes' range are learnt once, seeded, from evenly
spaced rows, and saved with the head as plain tensors (`knn.projection` [D, d], `knn.centroids`
[lists, d], `knn.code_range` [2, d]: each dimension's minimum and span): loading a head
re-assigns its rows to the saved centroids (seconds), it never re-trains k-means.

faiss is imported inside the functions: loading a head (featx.heads.scoring) stays light.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from featx.search.neighbours import NPROBE, PCA_ROWS, PROJECTED_DIM, TRAIN_ROWS, Neighbours, uncentred_pca, unit

EXACT_MAX_ROWS = 50_000  # reference rows searched exactly; above, IVF + exact re-ranking
RERANK = 100  # IVF candidates re-ranked exactly per query (>= the largest k searched, 50)
PROBE_SHARE = 32  # an IVF search probes 1 list in 32 (at least NPROBE)
BLOCK_ROWS = 16_384  # reference rows projected at a time
QUERY_ROWS = 4_096  # queries searched at a time (faiss's own BLAS block)
RERANK_ROWS = 32  # queries re-ranked at a time: 32 x 100 candidates x 1,280 float32 = 16 MB
KMEANS_ITERATIONS = 10
KMEANS_SEED = 1234
EXACT = "exact (faiss IndexFlatIP)"

_CACHE: dict[int, tuple[weakref.ref, "KnnIndex"]] = {}  # id(train_x) -> (its weakref, its index)


@dataclass
class KnnIndex:
    """A search structure over one reference set (the rows themselves stay with the caller)."""

    faiss_index: object  # IndexFlatIP over all rows (exact), or an IVF of projected rows' codes
    method: str
    projection: np.ndarray | None = None  # [D, d] (approximate only)
    quantizer: object = None  # the IVF's centroids index, kept alive beside it

    @property
    def exact(self) -> bool:
        return self.projection is None

    def search(self, rows: np.ndarray, queries: np.ndarray, k: int) -> Neighbours:
        """The k nearest of the reference `rows` (the ones this index was built on) for each query
        row, by cosine similarity, in blocks of QUERY_ROWS queries."""
        k = min(k, len(rows))
        n = len(queries)
        ids, sims = np.full((n, k), -1, np.int64), np.full((n, k), -np.inf, np.float32)
        for start in range(0, n, QUERY_ROWS):
            stop = min(n, start + QUERY_ROWS)
            q = unit(queries[start:stop])  # (b, D)
            if not k:
                continue
            if self.exact:
                s, i = self.faiss_index.search(q, k)
            else:
                s, i = self._rerank(rows, q, k)
            ids[start:stop], sims[start:stop] = i, s
        return Neighbours(ids, sims, self.method)

    def _rerank(self, rows: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """IVF candidates (the same RERANK of them whatever k is, so every k votes from one list),
        then the exact k best of them on the full rows."""
        self.faiss_index.nprobe = probes(self.faiss_index.nlist)
        _, candidates = self.faiss_index.search(np.ascontiguousarray(q @ self.projection), max(k, RERANK))
        ids = np.empty((len(q), k), np.int64)
        sims = np.empty((len(q), k), np.float32)
        for a in range(0, len(q), RERANK_ROWS):
            cand = candidates[a:a + RERANK_ROWS]  # (b, R), -1 where a query found fewer
            full = rows[np.maximum(cand, 0)].astype(np.float32)  # (b, R, D)
            s = np.matmul(full, q[a:a + RERANK_ROWS, :, None])[..., 0]  # (b, R)
            s[cand < 0] = -np.inf
            best = np.argsort(-s, axis=1, kind="stable")[:, :k]
            ids[a:a + RERANK_ROWS] = np.take_along_axis(cand, best, 1)
            sims[a:a + RERANK_ROWS] = np.take_along_axis(s, best, 1)
        return sims, ids


def knn_index(tensors: dict[str, np.ndarray]) -> KnnIndex:
    """The index of a k-NN head's tensors, built on first use and cached for as long as its
    `train_x` array lives (every block of a split, every `predict` batch reuses it)."""
    rows = tensors["train_x"]
    cached = _CACHE.get(id(rows))
    if cached is not None and cached[0]() is rows:
        return cached[1]
    index = build_index(tensors)
    remember(rows, index)
    return index


def remember(rows: np.ndarray, index: KnnIndex) -> None:
    """Cache `index` for the reference `rows` (dropped when the rows are freed)."""
    key = id(rows)
    _CACHE[key] = (weakref.ref(rows), index)
    weakref.finalize(rows, _CACHE.pop, key, None)


def build_index(tensors: dict[str, np.ndarray]) -> KnnIndex:
    """Exact for a head without `knn.centroids` (every head of up to EXACT_MAX_ROWS rows, and
    heads saved before featx kept float16 rows); the saved IVF otherwise, rows re-assigned."""
    import faiss

    rows = tensors["train_x"]
    if "knn.centroids" not in tensors:
        index = faiss.IndexFlatIP(rows.shape[1])
        for start in range(0, len(rows), BLOCK_ROWS):
            index.add(unit(rows[start:start + BLOCK_ROWS]))
        return KnnIndex(index, EXACT)
    projection = np.ascontiguousarray(tensors["knn.projection"], dtype=np.float32)
    centroids = np.ascontiguousarray(tensors["knn.centroids"], dtype=np.float32)
    lists, dim = centroids.shape
    quantizer = faiss.IndexFlatIP(dim)
    quantizer.add(centroids)
    index = faiss.IndexIVFScalarQuantizer(quantizer, dim, lists, faiss.ScalarQuantizer.QT_8bit,
                                          faiss.METRIC_INNER_PRODUCT, False)  # codes of the rows, not residuals
    faiss.copy_array_to_vector(np.ascontiguousarray(tensors["knn.code_range"], dtype=np.float32).ravel(),
                               index.sq.trained)  # faiss's layout: minimum [d], then span [d]
    index.is_trained = True
    for start in range(0, len(rows), BLOCK_ROWS):
        index.add(_project(rows[start:start + BLOCK_ROWS], projection))
    return KnnIndex(index, approximate_method(lists, dim), projection, quantizer)


def probes(lists: int) -> int:
    """Inverted lists searched per query: 1 in PROBE_SHARE (measured on 60,000 ELPV-like rows:
    nprobe 10 of 980 found 91% of the exact 10 nearest, 30 found 98% with RERANK 100)."""
    return min(lists, max(NPROBE, -(-lists // PROBE_SHARE)))


def approximate_method(lists: int, dim: int, energy: float | None = None) -> str:
    share = f" ({energy:.1%} of the energy)" if energy is not None else ""
    return (f"approximate: IVF{lists} over {dim} uncentred principal components{share}, nprobe "
            f"{probes(lists)}, 8-bit codes; the top {RERANK} candidates re-ranked exactly on the float16 rows")


def _project(rows: np.ndarray, projection: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rows.astype(np.float32) @ projection)  # (b, d)


def reference_set(blocks: Iterable[tuple[np.ndarray, np.ndarray]], n: int, dim: int,
                  advance=None) -> tuple[dict[str, np.ndarray], str]:
    """The k-NN head's tensors from `blocks` of (normalised features [b, D], labels [b]) that
    hold `n` rows in all, streamed into one preallocated array of unit rows (float32 up to
    EXACT_MAX_ROWS, float16 above, with the learnt IVF tensors), and how it searches."""
    dtype = np.float32 if n <= EXACT_MAX_ROWS else np.float16
    rows = np.empty((n, dim), dtype)  # (N, D) unit rows
    labels = np.empty(n, np.int64)
    at = 0
    for x, y in blocks:
        rows[at:at + len(x)] = unit(np.asarray(x))  # then float32 or float16
        labels[at:at + len(x)] = y
        at += len(x)
        if advance:
            advance(len(x))
    if at != n:
        raise ValueError(f"the training blocks held {at} rows, not {n}")
    tensors = {"train_x": rows, "train_y": labels}
    if n <= EXACT_MAX_ROWS:
        return tensors, EXACT
    projection, centroids, code_range, energy = learn_ivf(rows)
    tensors.update({"knn.projection": projection, "knn.centroids": centroids, "knn.code_range": code_range})
    return tensors, approximate_method(len(centroids), projection.shape[1], energy)


def learn_ivf(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The projection [D, d], IVF centroids [lists, d], the 8-bit codes' range [2, d] (minimum,
    span) and the energy share the projection keeps, learnt from up to TRAIN_ROWS evenly spaced
    reference rows (deterministic: seeded k-means)."""
    import faiss

    n = len(rows)
    sample = np.unique(np.linspace(0, n - 1, min(n, TRAIN_ROWS)).astype(np.int64))
    pca_rows = sample[::max(1, len(sample) // PCA_ROWS)]
    projection, energy = uncentred_pca(rows[pca_rows].astype(np.float32), min(PROJECTED_DIM, rows.shape[1]))
    projected = np.concatenate([_project(rows[sample[a:a + BLOCK_ROWS]], projection)
                                for a in range(0, len(sample), BLOCK_ROWS)])  # (S, d)
    lists = int(min(max(1, 4 * np.sqrt(n)), len(sample) // 39 or 1))  # faiss wants >= 39 per list
    kmeans = faiss.Kmeans(projection.shape[1], lists, niter=KMEANS_ITERATIONS, seed=KMEANS_SEED,
                          spherical=True, verbose=False)
    kmeans.train(projected)
    low, high = projected.min(0), projected.max(0)  # rows beyond the sample's range clip to it
    code_range = np.stack([low, high - low]).astype(np.float32)
    return projection, np.ascontiguousarray(kmeans.centroids, dtype=np.float32), code_range, energy
