"""How many labels each selection strategy needs: simulated labelling on real stores (issue 30).

    python benchmarks/label_efficiency.py                     # the stores under /work/stores
    python benchmarks/label_efficiency.py --store NAME=PATH --seeds 3 --out benchmarks/results

For each store (fully labelled: the simulation hides the train labels and reveals them as each
strategy asks), featx.explore.label_curve over every strategy and --seeds seeds; writes one
curve JSON + plot per store and benchmarks/results/label_efficiency.md: the labels each strategy
needed for its mean test top-1 to reach 95% of the full-data top-1 (same head), per dataset,
and the strategy with the fewest labels overall (select's default is chosen from it).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from pathlib import Path

from featx.explore import STRATEGIES, CurveConfig, label_curve

STORES = {
    "ELPV-4": "/work/stores/elpv4/elpv_efficientnet_lite0_224px_clean.h5",
    "ELPV-2": "/work/stores/elpv2/elpv_efficientnet_lite0_224px_clean.h5",
    "Fashion-MNIST (6,000)": "/work/stores/fmnist/fashion-mnist-sub6000_efficientnet_lite0_224px_clean.h5",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", action="append", metavar="NAME=PATH", help="a store (repeat); default: ELPV-4, "
                        "ELPV-2 and Fashion-MNIST under /work/stores")
    parser.add_argument("--strategy", action="append", choices=STRATEGIES, help="default: all")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    stores = dict(s.split("=", 1) for s in args.store) if args.store else STORES
    strategies = tuple(args.strategy or STRATEGIES)
    results = {}
    for name, path in stores.items():
        t = time.perf_counter()
        result = label_curve(path, CurveConfig(strategies=strategies, seeds=args.seeds),
                             log=lambda line, n=name: print(f"{n}: {line}", flush=True))
        result.write(args.out / "label_efficiency" / _slug(name))
        results[name] = (result, time.perf_counter() - t)
    table = markdown(results, strategies, args.seeds)
    (args.out / "label_efficiency.md").write_text(table)
    print(table)


def markdown(results: dict, strategies: tuple[str, ...], seeds: int) -> str:
    names = list(results)
    lines = ["# Labels needed to reach 95% of the full-data accuracy", "",
             f"`benchmarks/label_efficiency.py`, {seeds} seeds, efficientnet_lite0 clean features, "
             f"{os.cpu_count()}-core CPU dev box shared with other engineers' jobs ({platform.machine()}). "
             "Each cell: the smallest budget on the grid (C x 1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, ... labels, C = "
             "classes) at which the strategy's mean test top-1 over the seeds reaches 95% of the top-1 of the "
             "same head trained on every train label; in brackets, the share of the train split. Head: logistic "
             "regression (C=1) on standardised PCA-128 of unit features, refitted each round; every run starts "
             "from one random label per class.", "",
             "| strategy | " + " | ".join(names) + " | geometric mean of shares |",
             "|---|" + "---|" * (len(names) + 1)]
    ratios = {}
    for s in strategies:
        cells, shares = [], []
        for n in names:
            result, _ = results[n]
            needed = result.labels_to_95[s]
            share = (needed if needed is not None else result.train_rows) / result.train_rows
            shares.append(share)
            cells.append(f"{needed:,} ({share:.1%})" if needed is not None else "not reached")
        ratios[s] = math.exp(sum(math.log(x) for x in shares) / len(shares))
        lines.append(f"| {s} | " + " | ".join(cells) + f" | {ratios[s]:.1%} |")
    lines += ["", "| dataset | classes | train labels | test rows | full-data top-1 | full-data balanced | "
              "95% target | seconds (all strategies) |", "|---|---|---|---|---|---|---|---|"]
    for n in names:
        result, seconds = results[n]
        lines.append(f"| {n} | {len(result.classes)} | {result.train_rows:,} | {result.eval_rows:,} | "
                     f"{result.full['top1']:.3f} | {result.full['balanced']:.3f} | {0.95 * result.full['top1']:.3f} | "
                     f"{seconds:.0f} |")
    best = min(ratios, key=ratios.get)
    lines += ["", f"Fewest labels overall (geometric mean of the shares): **{best}**.", ""]
    lines += ["Per-strategy seconds (all seeds, all budgets):", ""]
    for n in names:
        lines.append(f"- {n}: " + ", ".join(f"{s} {t:.0f} s" for s, t in results[n][0].seconds.items()))
    return "\n".join(lines) + "\n"


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


if __name__ == "__main__":
    main()
