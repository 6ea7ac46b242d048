"""Probabilities at every data size: the old default head, the new one and logistic regression.

    .venv/bin/python benchmarks/calibration.py \\
        --store ELPV-4=/work/stores/elpv4/elpv_efficientnet_lite0_224px_clean.h5 \\
        --store ELPV-2=/work/stores/elpv2/elpv_efficientnet_lite0_224px_clean.h5 \\
        --sizes 10 20 50 full --seeds 3 --out benchmarks/results/calibration.json

For each store, size (images per class drawn from train+val, or all of them) and seed, the
default linear sweep is cross-validated once (featx.probes.selection.out_of_fold) and each
selection rule picks its head from the same out-of-fold predictions, then is refitted on the
sample and scored on the store's whole test split (never seen by any choice or temperature):

    old        best out-of-fold top-1, ties broken by loss (train-head before issue 28), T = 1
    old+T      the same head with its temperature fitted on its out-of-fold predictions
    raw-nll+T  among the heads tied with the best top-1, the lowest uncalibrated cross-entropy
    nll+T      the lowest calibrated cross-entropy of all 32, top-1 not looked at
    new        among the heads tied with the best top-1, the lowest cross-entropy at each head's
               own temperature, then that temperature (featx.probes.selection.choose)
    logreg     `--kind logreg`: C chosen on a stratified 15% of the sample (train-head's val)

Results (per run and the mean +- sd over seeds) go to --out as JSON, and a Markdown table to
--md.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from featx.data.splits import stratified_holdout
from featx.evaluation.calibration import fit_temperature, softmax_at
from featx.evaluation.metrics import evaluate
from featx.heads.scoring import Normalizer, linear_scores
from featx.probes.baselines import fit_baseline
from featx.probes.selection import PoolData, choose, out_of_fold, refit
from featx.probes.sweep import HeadConfig
from featx.store import FeatureStore

RULES = ("old", "old+T", "raw-nll+T", "nll+T", "new", "logreg")
METRICS = ("top1", "nll", "ece")


def load(path: str):
    """(x, y, pool rows, test rows, class names) of a store's labelled rows."""
    with FeatureStore(path) as store:
        rows = store.rows()
        rows = rows[store.labels[rows] >= 0]
        x, y = store.read_clean(rows).astype(np.float32), store.labels[rows].astype(np.int64)
        split = store.splits[rows]
        names = list(store.class_names)
    return x, y, np.flatnonzero(split != "test"), np.flatnonzero(split == "test"), names


def sample(y: np.ndarray, pool: np.ndarray, size: int | None, seed: int) -> np.ndarray:
    """`size` rows of each class from `pool` (all of a class that has fewer), seeded."""
    if size is None:
        return pool
    rng = np.random.default_rng([seed, size])
    return np.sort(np.concatenate([rng.permutation(pool[y[pool] == c])[:size] for c in np.unique(y[pool])]))


def picks(cv, logits: np.ndarray, y: np.ndarray) -> dict[str, tuple[int, float]]:
    """Rule -> (head index, temperature) from one cross-validation."""
    temps = {}

    def t(i: int) -> float:
        if i not in temps:
            temps[i] = fit_temperature(logits[i], y)
        return temps[i]

    tied = np.flatnonzero(cv.tied)
    raw = int(tied[np.argmin(cv.loss[tied])])
    calibrated = np.array([softmax_nll(logits[i], y, t(i)) if np.isfinite(cv.loss[i]) else np.inf
                           for i in range(len(logits))])
    overall = int(np.argmin(calibrated))
    return {"old": (cv.leader, 1.0), "old+T": (cv.leader, t(cv.leader)), "raw-nll+T": (raw, t(raw)),
            "nll+T": (overall, t(overall)), "new": (cv.best, float(cv.temperatures[cv.best]))}


def softmax_nll(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    p = softmax_at(logits, temperature)[np.arange(len(y)), y]
    return float(-np.log(np.clip(p, 1e-12, 1)).mean())


def scored(probs: np.ndarray, y: np.ndarray, names: list[str]) -> dict[str, float]:
    m = evaluate(y, probs, names, keep_samples=False, resamples=0)
    return {"top1": m.top1, "nll": m.nll, "ece": m.ece}


def one_run(x, y, pool, test, names, size, seed) -> dict:
    start = time.perf_counter()
    rows = sample(y, pool, size, seed)
    c = len(names)
    config = HeadConfig(seed=seed)
    data = PoolData(x[rows], y[rows], c)
    logits, usable, k = out_of_fold(data, config)
    cv = choose(logits, data.train_labels, usable, config.metric, k)
    chosen = picks(cv, logits, data.train_labels)
    test_logits = {}
    out = {"size": size, "seed": seed, "rows": int(len(rows)), "folds": k, "tied": int(cv.tied.sum()), "rules": {}}
    for rule, (i, temperature) in chosen.items():
        if i not in test_logits:
            sweep, normalizer = refit(data, config, i)
            tensors = {n: v.numpy() for n, v in sweep.heads.select(0).items()}
            test_logits[i] = linear_scores(tensors, normalizer(x[test]), softmax_output=False)
        lr, wd = config.grid[i]
        out["rules"][rule] = {**scored(softmax_at(test_logits[i], temperature), y[test], names),
                              "lr": lr, "weight_decay": wd, "temperature": temperature}
    held = stratified_holdout(y[rows], 0.15, seed=seed)
    fit_rows, val_rows = rows[~held], rows[held]
    normalizer = Normalizer.fit("standard", x[fit_rows])
    fit = fit_baseline("logreg", normalizer(x[fit_rows]), y[fit_rows], normalizer(x[val_rows]), y[val_rows], c, seed)
    probs = linear_scores({n: np.asarray(v) for n, v in fit.tensors.items()}, normalizer(x[test]))
    out["rules"]["logreg"] = {**scored(probs, y[test], names), **fit.params}
    out["seconds"] = time.perf_counter() - start
    return out


def summary(runs: list[dict]) -> dict:
    """rule -> metric -> [mean, sd] over the seeds of one size."""
    out = {}
    for rule in RULES:
        out[rule] = {}
        for metric in METRICS:
            v = np.array([r["rules"][rule][metric] for r in runs], dtype=np.float64)
            out[rule][metric] = [float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0]
    return out


def markdown(results: dict, machine: str, rules=("old", "new", "logreg")) -> str:
    head = "| data | images/class | " + " | ".join(f"{r} top-1 | {r} NLL | {r} ECE" for r in rules) + " |"
    lines = [f"Test split of each store; mean ± sd over {results['seeds']} seeds; {machine}.", "",
             head, "|" + "---|" * (2 + 3 * len(rules))]
    for name, sizes in results["stores"].items():
        for size, entry in sizes.items():
            s = entry["summary"]
            cells = []
            for r in rules:
                top1, nll, ece = (s[r][m] for m in METRICS)
                cells += [f"{100 * top1[0]:.1f} ± {100 * top1[1]:.1f}", f"{nll[0]:.3f} ± {nll[1]:.3f}",
                          f"{ece[0]:.3f} ± {ece[1]:.3f}"]
            rows, seeds = entry["runs"][0]["rows"], len(entry["runs"])
            shown = f"{rows} images" + (f", {seeds} seed{'s' * (seeds > 1)}" if seeds != results["seeds"] else "")
            lines.append(f"| {name} | {size} ({shown}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", action="append", required=True, metavar="NAME=PATH")
    parser.add_argument("--sizes", nargs="+", default=["10", "20", "50", "full"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/calibration.json"))
    parser.add_argument("--md", type=Path, default=None, help="also write the Markdown table here")
    parser.add_argument("--rules", nargs="+", default=["old", "new", "logreg"], help="columns of the table")
    parser.add_argument("--machine", default=f"{platform.node()}, {platform.processor() or platform.machine()}")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (the heads are small: on a busy box more threads only wait)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {"seeds": args.seeds, "machine": args.machine, "stores": {}}
    if args.out.exists():  # resumed: runs already measured are kept
        results = json.loads(args.out.read_text())
    for spec in args.store:
        name, path = spec.split("=", 1)
        x, y, pool, test, names = load(path)
        sizes = results["stores"].setdefault(name, {})
        for size in args.sizes:
            entry = sizes.setdefault(size, {"runs": []})
            done = {r["seed"] for r in entry["runs"]}
            for seed in range(args.seeds):
                if seed in done:
                    continue
                run = one_run(x, y, pool, test, names, None if size == "full" else int(size), seed)
                entry["runs"].append(run)
                print(name, size, seed, f"{run['seconds']:.0f}s tied={run['tied']}",
                      {r: (round(v["top1"], 3), round(v["nll"], 3), round(v["ece"], 3)) for r, v in run["rules"].items()},
                      flush=True)
                entry["summary"] = summary(entry["runs"])
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(results, indent=1) + "\n")
    table = markdown(results, args.machine, tuple(args.rules))
    print(table)
    if args.md:
        args.md.write_text(table)


if __name__ == "__main__":
    main()
