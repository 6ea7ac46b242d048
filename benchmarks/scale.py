"""featx at the size where caching features matters most: heads, info and report on N-row stores.

    .venv/bin/python benchmarks/scale.py --rows 2624 100000 300000 --work /tmp/scale
    .venv/bin/python benchmarks/scale.py --rows 1000000 --only linear      # the issue's 1M target

Each store is built once (kept in --work) from real extracted features (--source; by default
the benchmark extracts ELPV with efficientnet_lite0 into --work once: `featx extract elpv
--views 0 --pool none`, 2,624 rows of the backbone's 1,280-d final features), tiled to N rows,
float16, with featx's own store writer. Copy 0 is the store itself (its train/val/test split);
every further copy adds Gaussian noise (--noise x the mean feature norm, spread over the
dimensions), so rows differ, and keeps its row's train or val split, while copies of test rows
are unlabeled: the test split is always ELPV's own untiled test images (704 with the default
split), a sanity check that accuracy holds as N grows. So 60% of the rows are training rows, as
in the issue.

Every command runs as a subprocess (`featx train-head` with the default linear sweep, mlp, logreg
and knn; `featx info`; `featx report` over the heads); its wall seconds, CPU seconds (user+sys,
the machine may be shared) and peak RSS (MiB) come from os.wait4. The store is built by another
subprocess: a child's ru_maxrss includes the RSS of the process it was forked from, so this one
must stay small (built in-process, a 100k-row build made every command read 2.1 GB). The table
ends with each command's growth exponent: the slope of log(wall seconds) against log(N) between
the two largest N.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

COMMANDS = {
    "linear": ["train-head", "{store}", "--out", "{heads}/linear"],
    "mlp": ["train-head", "{store}", "--kind", "mlp", "--out", "{heads}/mlp"],
    "logreg": ["train-head", "{store}", "--kind", "logreg", "--out", "{heads}/logreg"],
    "knn": ["train-head", "{store}", "--kind", "knn", "--out", "{heads}/knn"],
    "info": ["info", "{store}"],
    "report": ["report", "{heads}", "--out", "{heads}/report.md"],
}


def build_store(path: Path, rows: int, source: Path, noise: float, seed: int = 0) -> float:
    """The tiled store at `path` (module docstring); returns the seconds prepare_store took."""
    from featx.data import Dataset, Sample
    from featx.store import FeatureStore, StoreSpec, StoreWriter, prepare_store

    with FeatureStore(source) as st:
        base = st.read_clean()
        labels, splits = np.asarray(st.labels), np.asarray(st.splits).astype(str)
        classes, names = list(st.classes), list(st.class_names)
        attrs = st.attrs
    n0 = len(base)
    samples = []
    for i in range(rows):
        j, copy = i % n0, i // n0
        test_copy = copy and splits[j] == "test"
        samples.append(Sample(f"tile{copy:04d}/{j:05d}.png", -1 if test_copy else int(labels[j]),
                              "unlabeled" if test_copy else str(splits[j]), 1, i))
    dataset = Dataset(path.parent / "no-images", f"tiled{rows}", "manifest", samples, classes, names)
    provenance = {k: attrs[k] for k in ("backbone", "weights", "weights_sha256", "input_size", "transform", "seed")}
    provenance.update(device="cpu", engine="torch", batch_size=64, decode="cpu", amp="off")
    spec = StoreSpec(provenance=provenance, feature_dim=base.shape[1], num_aug_views=0, dtype="float16")
    t = time.perf_counter()
    prepare_store(path, dataset, spec)
    created = time.perf_counter() - t
    rng = np.random.default_rng(seed)
    scale = noise * float(np.linalg.norm(base.astype(np.float32), axis=1).mean()) / math.sqrt(base.shape[1])
    writer = StoreWriter(path)
    block = 65_536
    for start in range(0, rows, block):
        stop = min(rows, start + block)
        idx = np.arange(start, stop)
        x = base[idx % n0].astype(np.float32)
        noisy = idx >= n0
        x[noisy] += rng.normal(0, scale, (int(noisy.sum()), base.shape[1])).astype(np.float32)
        writer.write_batch(start, stop, x.astype(np.float16), 0, None, {})
    writer.finish(1.0, 1.0)
    writer.close()
    return created


def source_store(work: Path, featx: list[str], env: dict) -> Path:
    """The default source: ELPV's 1,280-d lite0 final features, extracted into `work` once."""
    out = work / "source"
    found = sorted(out.glob("elpv_efficientnet_lite0_*.h5"))
    if not found:
        subprocess.run(featx + ["extract", "elpv", "--backbone", "efficientnet_lite0", "--views", "0",
                                "--pool", "none", "--dtype", "float16", "--out", str(out)], env=env, check=True)
        found = sorted(out.glob("elpv_efficientnet_lite0_*.h5"))
    return found[0]


def run(command: list[str], env: dict) -> dict:
    """Wall and CPU seconds, peak RSS (MB) and output of one subprocess."""
    t = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    return {"wall_s": time.perf_counter() - t, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_mb": usage.ru_maxrss / 1024, "ok": status == 0, "output": output[-2000:]}


def test_top1(heads: Path) -> float | None:
    for sidecar in heads.glob("*.json"):
        try:
            test = (json.loads(sidecar.read_text()).get("metrics") or {}).get("test") or {}
        except ValueError:
            continue
        if "top1" in test:
            return float(test["top1"])
    return None


def main() -> None:
    if sys.argv[1:2] == ["--build"]:
        store, rows, source, noise = sys.argv[2:6]
        t = time.perf_counter()
        created = build_store(Path(store), int(rows), Path(source), float(noise))
        print(f"built {store} ({rows} rows) in {time.perf_counter() - t:.1f} s; "
              f"prepare_store {created:.2f} s", flush=True)
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--only", nargs="+", choices=list(COMMANDS), default=list(COMMANDS))
    parser.add_argument("--work", type=Path, default=Path("/tmp/featx_scale"))
    parser.add_argument("--source", type=Path, default=None,
                        help="a complete store to tile (default: ELPV lite0, extracted into --work)")
    parser.add_argument("--noise", type=float, default=0.3, help="noise norm as a share of a feature's norm")
    parser.add_argument("--threads", type=int, default=2, help="OMP/MKL threads of each command")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    featx = [sys.executable, "-m", "featx.cli"]
    args.source = args.source or source_store(args.work, featx, env)
    results = []
    for rows in args.rows:
        store = args.work / f"tiled{rows}.h5"
        heads = args.work / f"heads{rows}"
        if not store.is_file():  # in a subprocess: a child's ru_maxrss counts this process's RSS
            store.parent.mkdir(parents=True, exist_ok=True)  # at its fork, so this one stays small
            subprocess.run([sys.executable, __file__, "--build", str(store), str(rows), str(args.source),
                            str(args.noise)], check=True)
        for name in args.only:
            command = [c.format(store=store, heads=heads) for c in COMMANDS[name]]
            r = run(featx + command, env)
            r.update(rows=rows, command=name,
                     test_top1=test_top1(heads / name) if name in ("linear", "mlp", "logreg", "knn") else None)
            results.append(r)
            top1 = f"{r['test_top1']:.3f}" if r["test_top1"] is not None else "-"
            print(f"{rows:>9} {name:<7} wall {r['wall_s']:8.1f} s  cpu {r['cpu_s']:8.1f} s  "
                  f"peak {r['peak_rss_mb']:7.0f} MiB  test top-1 {top1}" + ("" if r["ok"] else "  FAILED"),
                  flush=True)
            if not r["ok"]:
                print(r["output"], flush=True)
    print("\n| N | command | wall s | CPU s | peak RSS MiB | test top-1 |\n|---|---|---|---|---|---|")
    for r in results:
        top1 = f"{r['test_top1']:.1%}" if r["test_top1"] is not None else ""
        print(f"| {r['rows']:,} | {r['command']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
              f"{r['peak_rss_mb']:,.0f} | {top1} |" + ("" if r["ok"] else " FAILED"))
    print("\ngrowth exponent of wall time vs N (between the two largest N):")
    sizes = sorted(set(args.rows))
    for name in args.only:
        by_n = {r["rows"]: r["wall_s"] for r in results if r["command"] == name and r["ok"]}
        if len(sizes) >= 2 and sizes[-1] in by_n and sizes[-2] in by_n:
            slope = math.log(by_n[sizes[-1]] / by_n[sizes[-2]]) / math.log(sizes[-1] / sizes[-2])
            print(f"  {name:<7} {slope:.2f}")
    (args.work / "scale.json").write_text(json.dumps(
        [{k: v for k, v in r.items() if k != "output"} for r in results], indent=1))


if __name__ == "__main__":
    main()
