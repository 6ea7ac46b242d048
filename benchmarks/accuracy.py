"""How accurate is featx's default pipeline on data it was not tuned on? Seeded splits, side by side.

    python benchmarks/accuracy.py                       # ELPV-4, ELPV-2, Fashion-MNIST (3,000)
    python benchmarks/accuracy.py --datasets elpv --seeds 0 1 2

For each dataset, each backbone setting is extracted once (the first run's seconds are its
extraction cost); each split seed then re-splits the store in place (a split change runs no
forward: featx's living stores) and trains the heads of every configuration. Printed per
configuration: test top-1 and balanced accuracy as mean +- sd over the seeds, the paired change
of top-1 against today's default on the same test images (mean, and seeds where it was higher),
and seconds (extraction + head). Splits are 60/15/25, by content, seeded (--split-seed).

Configurations:
    before       the pipeline of featx 0.2: final features only (--pool none), the 32-head linear
                 sweep selected on the val split (--select val)
    default      today's defaults: final + pooled block features (--pool auto), 5-fold
                 cross-validated selection on train+val and a refit (--select auto)
    pool+val     pooled features, selected on val: the multi-layer lever alone
    final+cv     final features, cross-validated: the selection lever alone
    default-bal  the default, selected by balanced accuracy (--metric balanced_accuracy)
    default+tta  the default on features averaged over each image and its mirror (--tta flip)
    no-std       the default without feature standardisation (--normalize none)
    logreg       scikit-learn logistic regression (C chosen on val) on the default features
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featx.data import DatasetOptions, open_dataset
from featx.data.packaged import packaged_datasets
from featx.extraction import ExtractConfig, extract
from featx.probes.sweep import HeadConfig
from featx.probes.train import train_head

DEFAULT, FINAL, TTA = (("pool", "auto"),), (("pool", "none"),), (("pool", "auto"), ("tta", "flip"))
CONFIGS = {  # name: (ExtractConfig options, head kind, HeadConfig options)
    "before": (FINAL, "linear", {"select": "val"}),
    "default": (DEFAULT, "linear", {}),
    "pool+val": (DEFAULT, "linear", {"select": "val"}),
    "final+cv": (FINAL, "linear", {}),
    "default-bal": (DEFAULT, "linear", {"metric": "balanced_accuracy"}),
    "default+tta": (TTA, "linear", {}),
    "no-std": (DEFAULT, "linear", {"normalize": "none"}),
    "logreg": (DEFAULT, "logreg", {}),
}
FASHION_SAMPLES = 3000


@dataclass
class Row:
    top1: list[float] = field(default_factory=list)
    balanced: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


def datasets(names: list[str], tmp: Path) -> dict[str, tuple[object, DatasetOptions]]:
    """{label: (source, options)}; Fashion-MNIST as a fixed 3,000-image manifest without splits,
    so that its seeds re-split the same images as ELPV's do."""
    out = {}
    for name in names:
        if name == "elpv":
            out["ELPV-4"] = ("elpv", DatasetOptions())
        elif name == "elpv2":
            out["ELPV-2"] = ("elpv", DatasetOptions(binarize=0.5))
        elif name == "fashion-mnist":
            if "fashion-mnist" not in packaged_datasets():
                print("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist): skipped")
                continue
            full = open_dataset("fashion-mnist").subset(FASHION_SAMPLES, seed=0)
            manifest = tmp / "fashion-mnist-3000.csv"
            with manifest.open("w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["path", "label"])
                for s in full.samples:
                    w.writerow([str(full.abspath(s)), full.classes[s.label]])
            out[f"Fashion-MNIST {FASHION_SAMPLES:,}"] = (manifest, DatasetOptions())
    return out


def run_dataset(label: str, source, options: DatasetOptions, seeds: list[int], backbone: str,
                tmp: Path) -> dict[str, Row]:
    rows = {name: Row() for name in CONFIGS}
    extract_seconds: dict[tuple, float] = {}
    for seed in seeds:
        data = open_dataset(source, DatasetOptions(**{**options.__dict__, "split_seed": seed}))
        stores = {}
        for setting in sorted({c[0] for c in CONFIGS.values()}):
            start = time.perf_counter()
            folder = tmp / label.replace(" ", "_") / "-".join(v for _, v in setting)
            r = extract(data, backbone, folder, ExtractConfig(**dict(setting)), show_progress=False)
            extract_seconds.setdefault(setting, time.perf_counter() - start)  # the first, full run
            stores[setting] = r.store
        for name, (setting, kind, settings) in CONFIGS.items():
            start = time.perf_counter()
            head = train_head(stores[setting], kind, HeadConfig(head=kind, **settings),
                              out=tmp / "heads" / f"{label}-{name}-{seed}".replace(" ", "_"),
                              show_progress=False)
            row = rows[name]
            row.top1.append(head.test.top1)
            row.balanced.append(head.test.balanced_accuracy)
            row.seconds.append(extract_seconds[setting] + time.perf_counter() - start)
        print(f"  {label} seed {seed}: " + ", ".join(f"{n} {rows[n].top1[-1]:.3f}" for n in CONFIGS), flush=True)
    return rows


def print_table(label: str, rows: dict[str, Row]) -> None:
    base = rows["before"]
    print(f"\n{label}: {len(base.top1)} seeded splits")
    print(f"{'config':12} {'test top-1':>14} {'balanced acc':>14} {'top-1 vs before':>22} {'seconds':>8}")
    for name, row in rows.items():
        diff = np.array(row.top1) - np.array(base.top1)  # paired: same split, same test images
        wins = int((diff > 0).sum())
        change = "" if name == "before" else (f"{diff.mean() * 100:+.1f} ± {diff.std() * 100:.1f} "
                                              f"({wins}/{len(diff)} up)")
        print(f"{name:12} {_pm(row.top1):>14} {_pm(row.balanced):>14} {change:>22} "
              f"{np.mean(row.seconds):8.1f}")


def _pm(values: list[float]) -> str:
    return f"{np.mean(values) * 100:.1f} ± {np.std(values) * 100:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["elpv", "elpv2", "fashion-mnist"],
                        choices=["elpv", "elpv2", "fashion-mnist"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        results = {}
        for label, (source, options) in datasets(args.datasets, tmp).items():
            print(f"{label}: {args.backbone}, seeds {args.seeds}", flush=True)
            results[label] = run_dataset(label, source, options, args.seeds, args.backbone, tmp)
        for label, rows in results.items():
            print_table(label, rows)


if __name__ == "__main__":
    main()
