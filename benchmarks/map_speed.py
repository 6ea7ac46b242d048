"""`featx map` timed where the time goes: first-ever run, cold coordinates, cached; and a big store.

    python benchmarks/map_speed.py STORE [--work DIR] [--rows 100000 [--big-kind interp|noise]
                                         [--big-quality]] [--quality]

Each run is a fresh process (imports and numba's JIT are part of what a user waits for), on a
copy of STORE in --work (its map cache, STORE.map.npz, is removed or kept per run):

1. first-ever: an empty numba cache (NUMBA_CACHE_DIR=WORK/numba): umap-learn and pynndescent
   compile everything, as on a new machine;
2. cold coordinates: numba's cache warm, no map cache (a new store, or new images);
3. cached: the second map of the same store.

--rows N also maps a store of N rows made from STORE's features (no images, so no thumbnails),
cold coordinates then cached. --big-kind interp (the default): STORE's rows first, then points on
the segment from a row to one of its 10 nearest rows (SMOTE-like: a denser sample of the same
distribution). noise: STORE's rows stacked with 1% of each column's spread as noise, how the
first 100k timing was made; its 38 near-identical copies of each image fill every row's 15
neighbours, so a map of it says nothing about neighbourhoods between images.
--big-quality scores the big store's map against UMAP fitted on every row (slow: 200 s for
100,000 rows, quiet 2-core box) and against other placements of the same sample fit.
--quality compares UMAP at 200 and 500 epochs on STORE. Both score a map by the share of each
row's 15 nearest neighbours in the PCA space that are among its 15 nearest on the map (5,000
rows asked, against all), sklearn's trustworthiness (3,000 rows, 15 neighbours) and the share of
each row's 15 nearest on the map with its label (that share in the PCA space is the ceiling).
Prints one JSON line per run: seconds per step (import featx, pca, import_umap, knn, umap, the
rest = page and thumbnails) and in total.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def child(store: Path, out: Path, epochs: int | None) -> dict:
    """One map in this process, timed by step."""
    start = time.perf_counter()
    import featx  # noqa: F401 - its import is part of the wait
    from featx.explore import coords
    from featx.explore.map import MapConfig, map_store

    steps = {"import_featx": time.perf_counter() - start}
    original = coords.project

    def timed(x, projection, log, **kwargs):
        return original(x, projection, log, timings=steps, **kwargs)

    coords.project = timed
    projection = coords.Projection() if epochs is None else coords.Projection(epochs=epochs)
    result = map_store(store, out, MapConfig(projection=projection), log=lambda m: None)
    total = time.perf_counter() - start
    known = sum(steps.values())
    return {"rows": len(result.paths), "cached": result.cached, "method": result.method,
            "steps_s": {k: round(v, 2) for k, v in steps.items()},
            "page_and_rest_s": round(total - known, 2), "total_s": round(total, 2),
            "page_bytes": out.stat().st_size}


def run(store: Path, out: Path, env: dict, drop_cache: bool) -> dict:
    if drop_cache:
        Path(f"{store}.map.npz").unlink(missing_ok=True)
    proc = subprocess.run([sys.executable, __file__, "--child", str(store), "--out", str(out)],
                          env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def big_store(source: Path, path: Path, rows: int, kind: str = "interp", seed: int = 0) -> Path:
    """A complete store of `rows` rows made from `source`'s clean features (see --big-kind)."""
    from featx.data import Dataset, Sample
    from featx.store import FeatureStore, StoreSpec, StoreWriter, prepare_store

    with FeatureStore(source) as st:
        usable = st.rows()
        feats = st.read_clean(usable).astype(np.float32)
        paths, labels, splits = st.paths_of(usable), st.labels[usable], st.splits[usable]
        attrs = st.attrs
        classes, names = list(st.classes), list(st.class_names)
    rng = np.random.default_rng(seed)
    take = np.arange(rows) % len(feats)
    if kind == "noise":
        x = feats[take] + rng.normal(size=(rows, feats.shape[1])).astype(np.float32) * 0.01 * feats.std(0)
    else:
        import faiss

        unit = np.ascontiguousarray(feats / np.linalg.norm(feats, axis=1, keepdims=True))
        index = faiss.IndexFlatL2(unit.shape[1])
        index.add(unit)
        near = index.search(unit, 11)[1][:, 1:]
        to = near[take, rng.integers(0, 10, rows)]
        t = rng.uniform(0, 1, rows).astype(np.float32)[:, None]
        t[: len(feats)] = 0  # the source's rows themselves first
        x = unit[take] + t * (unit[to] - unit[take])
    samples = [Sample(f"copy{i // len(feats):03d}/{paths[j]}", int(labels[j]), str(splits[j]), 100, i)
               for i, j in enumerate(take)]
    dataset = Dataset(path.parent, "stacked", "manifest", samples, classes, names)
    keep = ("backbone", "weights", "weights_sha256", "input_size", "transform", "seed", "device",
            "engine", "batch_size", "decode", "amp", "pool", "tta")
    provenance = {k: attrs[k] for k in keep if k in attrs}
    spec = StoreSpec(provenance=provenance, feature_dim=x.shape[1], num_aug_views=0, dtype="float16")
    path.unlink(missing_ok=True)
    prepare_store(path, dataset, spec)
    writer = StoreWriter(path)
    writer.write_batch(0, rows, x, 0, None, {})  # the paths are in order already, as a store's rows
    writer.finish(1.0, 1.0)
    writer.close()
    return path


def quality(store: Path) -> dict:
    """The map of STORE at 200 and 500 epochs (same PCA, same neighbours)."""
    from featx.explore import coords

    x, labels = _features(store)
    reduced = _pca(x)
    out = {}
    for epochs in (200, 500):
        steps: dict = {}
        xy, _ = coords.project(x, coords.Projection(epochs=epochs), print, timings=steps)
        out[f"epochs_{epochs}"] = {**scores(reduced, xy, labels), "umap_s": round(steps["umap"], 2)}
    return out


def big_quality(store: Path) -> dict:
    """The big store's sampled map, other placements of the same fit, and UMAP on every row."""
    from featx.explore import coords

    x, labels = _features(store)
    reduced = _pca(x)
    projection = coords.Projection()
    out = {}
    start = time.perf_counter()
    xy, _ = coords.project(x, projection, print)
    out[f"sample {coords.FIT_ROWS}, placed by {coords.PLACE_NEIGHBOURS} (featx)"] = {
        **scores(reduced, xy, labels), "seconds": round(time.perf_counter() - start, 1)}
    fit = coords.fit_rows(len(x), projection)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    fit_space, _ = coords.reduce(unit, projection, fit)
    for k in (3, 15):
        out[f"sample {coords.FIT_ROWS}, placed by {k}"] = scores(reduced, coords.place(fit_space, fit, xy[fit], k), labels)
    start = time.perf_counter()
    coords.SAMPLE_ABOVE = len(x)  # every row fitted: UMAP's own NN-descent above EXACT_KNN_ROWS
    full, _ = coords.project(x, projection, print)
    out["UMAP on every row"] = {**scores(reduced, full, labels), "seconds": round(time.perf_counter() - start, 1)}
    return out


def scores(reduced: np.ndarray, xy: np.ndarray, labels: np.ndarray, k: int = 15) -> dict:
    """How well the map keeps the PCA space's neighbourhoods (see the module's docstring)."""
    import faiss
    from sklearn.manifold import trustworthiness

    asked = np.sort(np.random.default_rng(1).choice(len(xy), min(5000, len(xy)), replace=False))
    want = _knn(faiss, reduced, k + 1, asked)[:, 1:]
    got = _knn(faiss, np.ascontiguousarray(xy, np.float32), k + 1, asked)[:, 1:]
    kept = np.mean([len(set(a) & set(b)) / k for a, b in zip(want, got)])
    trust = trustworthiness(reduced[asked[:3000]], xy[asked[:3000]], n_neighbors=k)
    return {"knn15_kept": round(float(kept), 3), "trust15": round(float(trust), 4),
            "label_agree_map": round(float(np.mean(labels[got] == labels[asked, None])), 3),
            "label_agree_pca": round(float(np.mean(labels[want] == labels[asked, None])), 3)}


def _features(store: Path) -> tuple[np.ndarray, np.ndarray]:
    from featx.audit.run import StoreRows
    from featx.store import FeatureStore

    with FeatureStore(store) as st:
        rows = st.rows()
        return StoreRows(st, rows).take(np.arange(len(rows))), st.labels[rows]


def _pca(x: np.ndarray) -> np.ndarray:
    """The reference space: every row's unit features to 50 PCA components."""
    from sklearn.decomposition import PCA

    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    return PCA(50, svd_solver="randomized", random_state=0).fit_transform(unit).astype(np.float32)


def _knn(faiss, x: np.ndarray, k: int, asked: np.ndarray | None = None) -> np.ndarray:
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    return index.search(x if asked is None else np.ascontiguousarray(x[asked]), k)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("--work", type=Path, default=Path("runs/bench-map"))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--rows", type=int, default=0, help="also map a store of this many rows made from STORE's features (see --big-kind)")
    parser.add_argument("--big-kind", choices=("interp", "noise"), default="interp",
                        help="how the --rows store is made (see above)")
    parser.add_argument("--big-quality", action="store_true",
                        help="score the --rows store's map against UMAP on every row (slow)")
    parser.add_argument("--quality", action="store_true", help="kNN preservation at 200 vs 500 epochs")
    parser.add_argument("--skip-first", action="store_true", help="no first-ever run (keeps the numba cache)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.store, args.out, args.epochs)))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    store = args.work / args.store.name
    shutil.copy(args.store, store)
    numba_dir = args.work / "numba"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(numba_dir)}
    load = lambda: os.getloadavg()[0]  # noqa: E731
    page = args.work / "map.html"
    runs = []
    if not args.skip_first:
        shutil.rmtree(numba_dir, ignore_errors=True)
        runs.append(("first-ever (empty numba cache)", store, True))
    runs += [("cold coordinates (numba cache warm)", store, True), ("cached", store, False)]
    if args.rows:
        big = big_store(args.store, args.work / f"{args.big_kind}{args.rows}.h5", args.rows, args.big_kind)
        runs += [(f"{args.rows} rows ({args.big_kind}), cold coordinates", big, True),
                 (f"{args.rows} rows ({args.big_kind}), cached", big, False)]
    for name, path, drop in runs:
        before = load()
        result = run(path, page, env, drop)
        print(json.dumps({"run": name, "cpus": os.cpu_count(), "load_before": round(before, 1),
                          "load_after": round(load(), 1), **result}), flush=True)
    if args.quality:
        print(json.dumps({"run": "quality", **quality(store)}), flush=True)
    if args.rows and args.big_quality:
        before = load()
        print(json.dumps({"run": f"{args.rows} rows ({args.big_kind}), quality", "load_before": round(before, 1),
                          **big_quality(big), "load_after": round(load(), 1)}), flush=True)


if __name__ == "__main__":
    main()
