"""Audit (near-duplicates + outliers) of a store of a million rows, on a CPU, within 3 GB.

    .venv/bin/python benchmarks/audit_scale.py --rows 1000000 --threads 2 --work /tmp/audit_scale

The store is built once (kept in --work): the real ELPV efficientnet_lite0 clean features tiled
to --rows rows, each copy plus Gaussian noise (so copies are near, not identical), float16,
written with featx's own store writer. The audit then runs as `featx audit --checks duplicates
--checks outliers` would (no images: features only), and this prints its wall time and peak
memory (ru_maxrss of the process) beside a brute-force numpy blockwise search measured in the same
run on a 100,000-row slice: all 100k x 100k cosines in float32 blocks, top-k by argpartition.
Brute force on the slice is timed on its first --brute-queries queries and scaled linearly to
the whole slice (each query costs the same), then quadratically to --rows.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np


def build_store(path: Path, rows: int, source: Path, noise: float, seed: int = 0) -> None:
    from featx.data import Dataset, Sample
    from featx.store import FeatureStore, StoreSpec, StoreWriter, prepare_store

    with FeatureStore(source) as st:
        base = st.read_clean()  # (2624, 1280) real features
        attrs = st.attrs
    rng = np.random.default_rng(seed)
    scale = noise * float(np.linalg.norm(base, axis=1).mean()) / np.sqrt(base.shape[1])
    splits = ("train", "train", "train", "val", "test")
    samples = [Sample(f"tile/{i:07d}.png", i % 4, splits[i % 5], 1, i) for i in range(rows)]
    # a root with no images: the audit skips pixel checks (and says so), as for a moved dataset
    dataset = Dataset(path.parent / "no-images", "tiled-elpv", "manifest", samples, ["0", "1", "2", "3"], ["0", "1", "2", "3"])
    provenance = {k: attrs[k] for k in ("backbone", "weights", "weights_sha256", "input_size", "transform", "seed")}
    provenance.update(device="cpu", engine="torch", batch_size=64, decode="cpu", amp="off")
    spec = StoreSpec(provenance=provenance, feature_dim=base.shape[1], num_aug_views=0, dtype="float16")
    prepare_store(path, dataset, spec)
    writer = StoreWriter(path)
    block = 65_536
    for start in range(0, rows, block):
        stop = min(rows, start + block)
        x = base[np.arange(start, stop) % len(base)] + rng.normal(0, scale, (stop - start, base.shape[1]))
        writer.write_batch(start, stop, x.astype(np.float16), 0, None, {})
    writer.finish(1.0, 1.0)
    writer.close()


def brute_force(path: Path, slice_rows: int, queries: int, k: int) -> tuple[float, float]:
    """Seconds of numpy blockwise exact k-NN: for `queries` queries against `slice_rows` rows."""
    from featx.store import FeatureStore

    with FeatureStore(path) as st:
        x = st.read_span(0, slice_rows)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    t = time.perf_counter()
    for start in range(0, queries, 1024):
        sims = x[start:start + 1024] @ x.T  # (1024, slice_rows)
        np.argpartition(-sims, k, axis=1)[:, :k + 1]
    return time.perf_counter() - t, float(slice_rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=2, help="FAISS/BLAS threads (the cores to use)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/audit_scale"))
    parser.add_argument("--source", type=Path, default=None,
                        help="a complete store to tile (default: ELPV lite0, extracted into --work, "
                             "as benchmarks/scale.py does)")
    parser.add_argument("--noise", type=float, default=0.3, help="noise norm as a share of a feature's norm")
    parser.add_argument("--slice", type=int, default=100_000)
    parser.add_argument("--brute-queries", type=int, default=10_240)
    args = parser.parse_args()
    import faiss

    faiss.omp_set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    from featx.audit import AuditConfig, audit

    store = args.work / f"tiled_{args.rows}.h5"
    if not store.exists():
        args.work.mkdir(parents=True, exist_ok=True)
        if args.source is None:
            sys.path.insert(0, str(Path(__file__).parent))
            from scale import source_store

            args.source = source_store(args.work, [sys.executable, "-m", "featx.cli"], dict(os.environ))
        t = time.perf_counter()
        import multiprocessing as mp  # built in a child: its memory is not the audit's peak

        child = mp.get_context("spawn").Process(target=build_store, args=(store, args.rows, args.source, args.noise))
        child.start()
        child.join()
        print(f"built {store} ({store.stat().st_size / 2**30:.2f} GiB) in {time.perf_counter() - t:.0f} s", flush=True)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    t, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    result = audit(store, args.work / "audit", AuditConfig(checks=("duplicates", "outliers")), log=print)
    seconds = time.perf_counter() - t
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu_seconds = used.ru_utime - cpu.ru_utime + used.ru_stime - cpu.ru_stime  # on a shared machine: the honest cost
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB (ru_maxrss is KiB)
    k = result.summary["k"]
    brute, n = brute_force(store, min(args.slice, args.rows), min(args.brute_queries, args.slice), k)
    brute_slice = brute * n / min(args.brute_queries, args.slice)
    brute_full = brute_slice * (args.rows / n) ** 2
    report = {"rows": args.rows, "threads": args.threads, "audit_seconds": round(seconds, 1),
              "audit_cpu_seconds": round(cpu_seconds, 1),
              "audit_steps": result.summary["seconds"], "peak_rss_gib": round(peak, 2),
              "rss_before_audit_gib": round(before, 2), "search": result.summary["search"],
              "near_pairs": result.summary["duplicates"]["near_pairs"],
              "outliers_flagged": result.summary["outliers"]["flagged"],
              "brute_force_slice_rows": int(n), "brute_force_slice_seconds": round(brute_slice, 1),
              "brute_force_extrapolated_seconds": round(brute_full, 0),
              "speedup_vs_brute_force": round(brute_full / seconds, 1)}
    print(json.dumps(report, indent=2))
    print(f"audit of {args.rows:,} rows: {seconds:.0f} s, peak {peak:.2f} GiB; brute force numpy: "
          f"{brute_slice:.0f} s on {int(n):,} rows, ~{brute_full:.0f} s extrapolated to {args.rows:,} "
          f"(x{brute_full / seconds:.0f})", file=sys.stderr)


if __name__ == "__main__":
    main()
