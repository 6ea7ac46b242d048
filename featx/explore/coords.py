"""2-D coordinates of a store's clean features, computed once per content and cached beside it.

    xy, method, cached = coordinates(store, rows, features, settings, log)

The features (the backbone's final ones, unit length: cosine geometry, as in the audit) go
through PCA to `pca_dims` dimensions, then UMAP (umap-learn, `featx[explore]`) to 2. PCA first
because UMAP's neighbour search on 1,280 dimensions costs several times more than on 50, and 50
components keep the neighbourhoods that UMAP draws. Without umap-learn the map is the PCA's
first two components, and the page says so.

Above SAMPLE_ABOVE rows UMAP is fitted on a seeded sample of FIT_ROWS rows (the PCA too) and
every other row is placed at the inverse-distance-weighted mean of its PLACE_NEIGHBOURS nearest
fitted rows in the PCA space: much where umap-learn's own `transform` starts a new point, without
its further epochs (6x the time and no closer neighbourhoods, docs/map.md). 100,000 rows: 30 s of
coordinates instead of 202-234 s (quiet 2-core box). The sample is uniform, not by class, so that
a relabel keeps the map at every size.

The cache, `STORE.map.npz`, is keyed by what the coordinates depend on: every row's content
hash in order (a relabel or a new split keeps the map; a new image redraws it), the backbone,
its weights and preprocessing, and the settings. Thumbnails are cached in it the same way.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from featx.runtime.atomic import atomic_write

METHODS = ("umap", "pca")


@dataclass(frozen=True)
class Projection:
    method: str = "umap"  # umap | pca (PCA's first two components)
    pca_dims: int = 50
    neighbours: int = 15  # UMAP n_neighbors: its default, local structure at ELPV's scale
    min_dist: float = 0.1
    seed: int = 0
    # UMAP's own default above 10,000 rows; below it UMAP would run 500, 2.5x the layout time for
    # a map whose neighbourhoods keep as well (docs/audit.md, "The map": measured on ELPV).
    epochs: int = 200


SAMPLE_ABOVE = 50_000  # rows; up to here every row is fitted, as before (same coordinates)
FIT_ROWS = 25_000  # fitted above it: UMAP's layout costs ~linear time in the rows it fits
PLACE_NEIGHBOURS = 5  # 3, 5 and 15 measured: 5 keeps neighbourhoods as well as 3, less noisy


def sampled(n: int, projection: Projection) -> bool:
    """Whether a map of n rows fits UMAP on a sample and places the rest."""
    return projection.method == "umap" and n > SAMPLE_ABOVE


def cache_path(store: Path) -> Path:
    return store.with_name(store.name + ".map.npz")


def content_key(store, rows: np.ndarray, projection: Projection) -> str:
    """A hash of everything the coordinates depend on."""
    attrs = store.attrs
    shas = store.content_hashes()
    h = hashlib.sha256()
    if shas is None:  # a store from before content hashes: its version and creation stand in
        h.update(f"{attrs.get('created')}|{attrs.get('store_version', 1)}".encode())
    else:
        for r in rows:
            h.update((shas[r] or f"row:{r}").encode())
    h.update(json.dumps([attrs.get("backbone"), attrs.get("weights_sha256"), attrs.get("transform"),
                         store.final_dim, len(rows), asdict(projection)], sort_keys=True, default=str).encode())
    return h.hexdigest()


def read_cache(path: Path) -> dict:
    """The cache's arrays, or {} when there is none or it cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError):
        return {}


def write_cache(path: Path, arrays: dict, log) -> None:
    try:
        atomic_write(path, lambda tmp: _savez(tmp, arrays))
    except OSError as exc:  # a read-only store folder: the map still works, only slower next time
        log(f"note: map coordinates not cached ({path}: {exc.strerror or exc})")


def _savez(tmp: Path, arrays: dict) -> None:
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)


def coordinates(store, rows: np.ndarray, features, projection: Projection, log) -> tuple[np.ndarray, str, bool]:
    """[len(rows), 2] float32 coordinates, how they were made, and whether they came from the cache.

    `features()` returns the rows' features [n, D]; it is called only on a cache miss.
    """
    path = cache_path(Path(store.path))
    key = content_key(store, rows, projection)
    if sampled(len(rows), projection):  # a different map than fitting every row: its own key
        key += f":fit{FIT_ROWS}:place-idw{PLACE_NEIGHBOURS}"
    if projection.method == "umap" and importlib.util.find_spec("umap") is None:
        key += ":without-umap"  # PCA's stand-in: made again, as UMAP, once umap-learn is installed
    cached = read_cache(path)
    if cached.get("key") is not None and str(cached["key"]) == key:
        return cached["xy"], str(cached["method"]), True
    xy, method = project(features(), projection, log)
    write_cache(path, {**cached, "key": np.array(key), "xy": xy, "method": np.array(method)}, log)
    return xy, method, False


def project(x: np.ndarray, projection: Projection, log,
            timings: dict | None = None) -> tuple[np.ndarray, str]:
    """Unit rows -> PCA -> UMAP (or PCA alone): [n, 2] float32, and a sentence saying how.
    Above SAMPLE_ABOVE rows UMAP fits FIT_ROWS of them and places the rest (`place`).
    `timings`, if given, gets the seconds of each step (pca, import_umap, knn, umap, place)."""
    clock = _Clock(timings)
    x = np.asarray(x, np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    fit = fit_rows(len(x), projection) if sampled(len(x), projection) else None
    reduced, dims = reduce(x, projection, fit)
    clock.lap("pca")
    method = projection.method
    if method == "umap":
        try:
            import_umap()
        except ImportError:
            log("note: umap-learn is not installed (pip install 'featx[explore]'): the map shows "
                "PCA's first two components instead")
            method = "pca"
        clock.lap("import_umap")
    if method == "pca" or len(x) <= projection.neighbours + 1:  # UMAP needs more rows than neighbours
        xy = reduced[:, :2] if reduced.shape[1] >= 2 else np.pad(reduced, ((0, 0), (0, 2 - reduced.shape[1])))
        return np.ascontiguousarray(xy, np.float32), f"PCA (first 2 of {dims} components of unit features)"
    how = (f"UMAP (n_neighbors={projection.neighbours}, min_dist={projection.min_dist}, "
           f"{projection.epochs} epochs)")
    if fit is None:
        return embed(reduced, projection, clock), f"{how} after PCA to {dims} dimensions of unit features"
    xy = place(reduced, fit, embed(reduced[fit], projection, clock, exact_up_to=FIT_ROWS))
    clock.lap("place")
    return xy, (f"{how} fitted on a seeded sample of {len(fit):,} of the {len(x):,} rows, each other row "
                f"at the inverse-distance-weighted mean of its {PLACE_NEIGHBOURS} nearest fitted rows; "
                f"after PCA (fitted on the sample) to {dims} dimensions of unit features")


def fit_rows(n: int, projection: Projection) -> np.ndarray:
    """The rows UMAP fits above SAMPLE_ABOVE: FIT_ROWS of n, uniform and seeded, sorted."""
    return np.sort(np.random.default_rng(projection.seed).choice(n, size=min(FIT_ROWS, n), replace=False))


def reduce(x: np.ndarray, projection: Projection, fit: np.ndarray | None) -> tuple[np.ndarray, int]:
    """Unit rows -> their first principal components (fitted on the rows `fit`, or all), and how many."""
    from sklearn.decomposition import PCA

    dims = max(2, min(projection.pca_dims, x.shape[1], len(x)))
    if len(x) <= 2:
        return np.zeros((len(x), 2)), dims
    # Randomized SVD: 50 of 1,280 components in a third of the time of sklearn's automatic choice.
    pca = PCA(dims, svd_solver="randomized", random_state=projection.seed)
    if fit is None:
        return pca.fit_transform(x), dims
    return pca.fit(x[fit]).transform(x), dims


def embed(reduced: np.ndarray, projection: Projection, clock: "_Clock | None" = None,
          exact_up_to: int | None = None) -> np.ndarray:
    """UMAP of these rows, seeded: [n, 2] float32; neighbours exact up to `exact_up_to` rows
    (EXACT_KNN_ROWS without it)."""
    clock = clock or _Clock(None)
    umap = import_umap()
    knn = exact_knn(reduced, projection.neighbours, exact_up_to)
    clock.lap("knn")
    with warnings.catch_warnings():  # "n_jobs overridden by random_state": seeded maps are wanted
        warnings.simplefilter("ignore", UserWarning)
        warnings.filterwarnings("ignore", "Cannot cache compiled function")  # stays in memory, as before
        fitted = umap.UMAP(n_components=2, n_neighbors=projection.neighbours, min_dist=projection.min_dist,
                           random_state=projection.seed, n_epochs=projection.epochs,
                           precomputed_knn=knn).fit_transform(reduced)
    clock.lap("umap")
    return np.ascontiguousarray(fitted, np.float32)


def place(reduced: np.ndarray, fit: np.ndarray, embedding: np.ndarray, k: int = PLACE_NEIGHBOURS) -> np.ndarray:
    """Every row's 2-D point: the fitted rows' `embedding`, each other row the mean of its k nearest
    fitted rows' points (exact, euclidean in the PCA space) weighted by 1/distance. A convex
    combination, so a placed row lands among its neighbours; a duplicate of a fitted row on it."""
    import faiss

    rest = np.setdiff1d(np.arange(len(reduced)), fit)
    index = faiss.IndexFlatL2(reduced.shape[1])
    index.add(np.ascontiguousarray(reduced[fit], np.float32))
    squared, ids = index.search(np.ascontiguousarray(reduced[rest], np.float32), min(k, len(fit)))
    weights = 1.0 / np.maximum(np.sqrt(np.maximum(squared, 0)), 1e-6)
    weights /= weights.sum(axis=1, keepdims=True)
    xy = np.empty((len(reduced), 2), np.float32)
    xy[fit] = embedding
    xy[rest] = np.einsum("nk,nkd->nd", weights, embedding[ids])
    return xy


class _Clock:
    """Seconds since the last lap, into `timings` under each lap's name (nothing without it)."""

    def __init__(self, timings: dict | None):
        self.timings, self.last = timings, time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        if self.timings is not None:
            self.timings[name] = now - self.last
        self.last = now


def import_umap():
    """umap-learn, with its numba functions cached on disk.

    umap-learn compiles them again in every process (pynndescent, beneath it, caches its own):
    15 s of a 25 s ELPV map on the 2-core box. Caching them makes that once per machine. numba
    keeps the cache beside umap's sources, or, where those cannot be written, in the user's
    cache folder (or NUMBA_CACHE_DIR); an entry is used only for the same source file, numba
    and CPU. Raises ImportError without umap-learn."""
    import umap
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    for name, module in list(sys.modules.items()):
        if name != "umap" and not name.startswith("umap."):
            continue
        for value in list(vars(module).values()):
            if (isinstance(value, Dispatcher) and isinstance(value._cache, NullCache)
                    and getattr(value.py_func, "__module__", "").startswith("umap")):
                value.enable_caching()
    return umap


EXACT_KNN_ROWS = 20_000  # up to here an exact FAISS search is seconds; beyond, UMAP's NN-descent


def exact_knn(x: np.ndarray, k: int,
              exact_up_to: int | None = None) -> tuple[np.ndarray | None, np.ndarray | None, None]:
    """UMAP's `precomputed_knn`: each row's k nearest rows (itself first) by euclidean distance.

    Below 4,096 rows UMAP would compute all pairwise distances through a Python callable (37 s
    of a 92 s ELPV map on the 2-core box); FAISS's exact search takes well under a second.
    (None, None, None) above `exact_up_to` rows (EXACT_KNN_ROWS without it) lets UMAP search
    approximately itself. A sampled fit's FIT_ROWS are searched exactly: 2 s for 25,000 rows,
    where NN-descent took 40 (quiet 2-core box)."""
    if len(x) > (EXACT_KNN_ROWS if exact_up_to is None else exact_up_to):
        return None, None, None
    import faiss

    rows = np.ascontiguousarray(x, np.float32)
    index = faiss.IndexFlatL2(rows.shape[1])
    index.add(rows)
    squared, ids = index.search(rows, k)
    # A row's duplicate may come before the row itself; UMAP wants the row first, at distance 0.
    for i in np.flatnonzero(ids[:, 0] != np.arange(len(rows))):
        others = [j for j in ids[i] if j != i][: k - 1]
        ids[i] = [i, *others]
        squared[i] = [0.0, *np.sum((rows[others] - rows[i]) ** 2, axis=1)]
    return ids.astype(np.int64), np.sqrt(np.maximum(squared, 0)).astype(np.float32), None
