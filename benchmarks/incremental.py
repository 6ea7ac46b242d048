"""Living stores on ELPV: what an update costs next to a full extraction (issue 19).

    python benchmarks/incremental.py                       # efficientnet_lite0, 2 views (mild)
    python benchmarks/incremental.py --keep /tmp/incr      # keep the datasets and stores

Every step is one `featx extract` process, timed from start to exit (start-up included, as a
user pays it), all in one run on the same machine:

    full      the base dataset: ELPV less a seeded 1/11 of its images (2,386 of 2,624)
    no-op     the same command again, nothing changed (the fixed start-up every run pays)
    +10%      the 238 held-out images added back (10% of the base); then removed and added
              again, to show the noise of a shared machine
    relabel   5% of the labels edited in labels.csv (no split moves: splits follow content)
    move      the dataset copied to another folder (`cp -r`: new mtimes, new root) and the old
              copy deleted: every file is hashed again, none is forwarded
    fresh     a fresh extraction of the final dataset, compared table by table with the
              updated store (the update must equal it)

Printed: seconds per step and, for the updates, (t - t_noop) / (t_full - t_noop), the cost beyond
start-up as a share of the full extraction's (issue 19 asks for <= 15% for +10%, < 5% for a
relabel or a move, and a no-op of a few seconds).
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from featx.data.manifest import read_table
from featx.data.packaged import packaged_datasets


def write_dataset(folder: Path, rows: list[list[str]]) -> Path:
    """labels.csv of `rows` (ELPV's own format: path, label, kind) in `folder`/elpv."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "labels.csv").write_text("".join(f"{r[0]} {r[1]} {r[2]}\n" for r in rows))
    return folder / "labels.csv"


def run(manifest: Path, out: Path, args) -> tuple[float, str]:
    command = [sys.executable, "-m", "featx.cli", "extract", str(manifest), "-b", args.backbone,
               "--views", str(args.views), "--aug", "mild", "--label-col", "1", "--out", str(out)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(done.stderr[-3000:])
    return seconds, done.stdout.strip().splitlines()[-1]


def compare(a: Path, b: Path) -> str:
    """'identical' or the tables that differ (with the largest difference of numbers)."""
    tables: list[dict] = [{}, {}]
    for i, path in enumerate((a, b)):
        with h5py.File(path, "r") as f:
            f.visititems(lambda n, d, t=tables[i]: t.__setitem__(n, d[()])
                         if isinstance(d, h5py.Dataset) else None)
    if tables[0].keys() != tables[1].keys():
        return f"different tables: {sorted(set(tables[0]) ^ set(tables[1]))}"
    out = []
    for name in sorted(tables[0]):
        x, y = tables[0][name], tables[1][name]
        if x.shape != y.shape:
            out.append(f"{name} shape {x.shape} vs {y.shape}")
        elif not np.array_equal(x, y):
            diff = (f", max |diff| {np.abs(x.astype(np.float64) - y.astype(np.float64)).max():.2e}"
                    if x.dtype.kind == "f" else "")
            out.append(f"{name} differs{diff}")
    return "identical, table by table" if not out else "; ".join(out)


def forwarded(line: str) -> int:
    """Images the step forwarded, from its summary line (0 for a no-op)."""
    import re

    found = re.search(r"(\d+) images (?:forwarded )?in", line)
    return int(found.group(1)) if found else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep the files")
    args = parser.parse_args()
    labels, _, _ = packaged_datasets()["elpv"]
    rows, _ = read_table(labels)
    rng = random.Random(0)
    held = set(rng.sample(range(len(rows)), len(rows) // 11))
    base = [r for i, r in enumerate(rows) if i not in held]
    work = args.keep or Path(tempfile.mkdtemp(prefix="featx-incremental-"))
    data, out = work / "a" / "elpv", work / "stores"
    shutil.copytree(labels.parent / "images", data / "images")
    results = []
    manifest = write_dataset(data, base)
    results.append(("full", len(base), *run(manifest, out, args)))
    results.append(("no-op", len(base), *run(manifest, out, args)))
    manifest = write_dataset(data, rows)
    results.append(("+10%", len(rows), *run(manifest, out, args)))
    # Once more on the same store, to see the noise of a shared machine: remove them, add again.
    results.append(("-10% (removal)", len(base), *run(write_dataset(data, base), out, args)))
    results.append(("no-op again", len(base), *run(manifest, out, args)))
    manifest = write_dataset(data, rows)
    results.append(("+10% again", len(rows), *run(manifest, out, args)))
    values = sorted({r[1] for r in rows})
    relabelled = [list(r) for r in rows]
    for i in rng.sample(range(len(rows)), len(rows) // 20):
        relabelled[i][1] = values[(values.index(rows[i][1]) + 1) % len(values)]
    manifest = write_dataset(data, relabelled)
    results.append(("relabel 5%", len(rows), *run(manifest, out, args)))
    moved = work / "b" / "elpv"
    shutil.copytree(data, moved, copy_function=shutil.copy)  # cp -r: new mtimes
    shutil.rmtree(work / "a")
    results.append(("move (cp -r)", len(rows), *run(moved / "labels.csv", out, args)))
    results.append(("fresh", len(rows), *run(moved / "labels.csv", work / "fresh", args)))
    (store,) = out.glob("*.h5")
    (fresh,) = (work / "fresh").glob("*.h5")
    # The start-up every run pays: the faster of the two no-ops (the machine may be shared).
    full, noop = results[0][2], min(results[1][2], results[4][2])
    full_images = forwarded(results[0][3])
    print(f"\n{args.backbone}, {args.views} views, ELPV; each step a `featx extract` process\n")
    print("| step | samples | seconds | beyond start-up, share of full | images forwarded |")
    print("|---|---|---|---|---|")
    for name, n, seconds, line in results:
        fixed = name in ("full", "no-op", "no-op again", "fresh")
        share = "" if fixed else f"{(seconds - noop) / (full - noop):.1%}"
        images = forwarded(line)
        shown = f"{images:,}" + (f" ({images / full_images:.1%})" if name != "full" and images else "")
        print(f"| {name} | {n:,} | {seconds:.1f} | {share} | {shown} |")
    print()
    for name, _, _, line in results:
        print(f"{name}: {line}")
    print(f"\nupdated store vs fresh extraction: {compare(store, fresh)}")
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
