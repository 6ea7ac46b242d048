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

Each rule's test probabilities are also scored on a class-balanced view of the test split, to
measure how much of the remaining ECE is the prior shift between a sample of N images per class
and an imbalanced test split (ELPV-2: 66% functional):

    bal_*      importance-weighted: each test image weighted by sample prior / test prior of its
               class (the test split as if it had the sample's class mix)
    rs_*       the mean over RESAMPLES draws of the same number of test images of every class (the
               rarest class's count); ctl_* the mean over as many random draws of that size from
               the test split as it is, which shows what the smaller set alone does to ECE
    prior_*    the probabilities moved from the sample prior to the store's own train+val class
               frequencies (p * pi_store / pi_sample, renormalised: Saerens et al. 2002), on the
               test split as it is

--candidates adds the fixes measured for the underconfidence at 10-50 images per class (the
temperature fitted on out-of-fold predictions of fold heads, applied to a refit on all the data):

    ens-prob   the chosen setting's k fold heads kept as the head: the mean of their probabilities
               at the out-of-fold temperature (fitted on exactly the heads that are applied)
    ens-logit  the same k heads, their mean logits at that temperature
    fold-T     the refit at the median of the k temperatures each fitted on one fold's held-out
               predictions
    map-T      a Gaussian prior on log T (sd PRIOR_SD, fixed before measuring): T is the MAP
               estimate from the out-of-fold predictions, and the tied settings are ranked at theirs
    near-1     among the tied settings whose out-of-fold T is within a factor NEAR_ONE of 1, the
               lowest cross-entropy at T = 1 (that setting, at its own T); `new` where none is
    conf-T     `new`'s head at the T whose out-of-fold mean top probability equals the out-of-fold
               top-1 (a moment estimate: each confident error counts once, where it weighs without
               bound in the cross-entropy that the other temperatures minimise)

--draw stratified draws the same number of images (N x classes) with the store's class mix
instead of N of each: the sample's prior is then the test split's, as it is for train-head on a
store whose splits are stratified.

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
from featx.evaluation.calibration import fit_temperature, softmax_at, weighted_nll_ece
from featx.evaluation.metrics import evaluate
from featx.heads.scoring import Normalizer, linear_scores
from featx.probes.baselines import fit_baseline
from featx.evaluation.calibration import T_MAX, T_MIN, nll_at
from featx.probes.selection import PoolData, _normalized, choose, fold_count, refit, stratified_folds
from featx.probes.sweep import HeadConfig, train_heads
from featx.store import FeatureStore

RULES = ("old", "old+T", "raw-nll+T", "nll+T", "new", "logreg")
CANDIDATES = ("ens-prob", "ens-logit", "fold-T", "map-T", "near-1", "conf-T")
PRIOR_SD = 1.0  # log T ~ N(0, 1): T beyond [1/7, 7] is a 5% prior event (Guo et al. fit 1-3)
NEAR_ONE = 2.0  # near-1: 1/2 <= T <= 2
METRICS = ("top1", "nll", "ece")
VIEWS = ("bal_nll", "bal_ece", "rs_nll", "rs_ece", "ctl_ece", "prior_top1", "prior_nll", "prior_ece", "gap",
         "oof_top1")
RESAMPLES = 50


def load(path: str):
    """(x, y, pool rows, test rows, class names) of a store's labelled rows."""
    with FeatureStore(path) as store:
        rows = store.rows()
        rows = rows[store.labels[rows] >= 0]
        x, y = store.read_clean(rows).astype(np.float32), store.labels[rows].astype(np.int64)
        split = store.splits[rows]
        names = list(store.class_names)
    return x, y, np.flatnonzero(split != "test"), np.flatnonzero(split == "test"), names


def sample(y: np.ndarray, pool: np.ndarray, size: int | None, seed: int, draw: str = "balanced") -> np.ndarray:
    """`size` rows of each class from `pool` (all of a class that has fewer), seeded; with
    `draw="stratified"`, size x classes rows in the pool's class proportions (at least 2 a class)."""
    if size is None:
        return pool
    rng = np.random.default_rng([seed, size])
    classes = np.unique(y[pool])
    share = np.bincount(y[pool])[classes] / len(pool)
    take = [size] * len(classes) if draw == "balanced" else \
        [max(2, int(round(size * len(classes) * f))) for f in share]
    return np.sort(np.concatenate([rng.permutation(pool[y[pool] == c])[:k] for c, k in zip(classes, take)]))


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


def out_of_fold_and_test(pool: PoolData, config: HeadConfig, x_test: np.ndarray):
    """featx.probes.selection.out_of_fold, line for line, and also each fold's sweep scored on the
    test rows: (logits [H, n, C], usable [H], k, fold [n], test logits [k, H, m, C])."""
    k = fold_count(pool.train_labels, config.folds)
    fold = stratified_folds(pool.train_labels, k, config.seed)
    n, h = pool.n_train, len(config.grid)
    logits = np.zeros((h, n, pool.num_classes), np.float32)
    test = np.zeros((k, h, len(x_test), pool.num_classes), np.float32)
    usable = np.ones(h, bool)
    for f in range(k):
        train, held = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        normalizer = Normalizer.fit(config.normalize, pool.clean[train])
        sweep = train_heads(_normalized(pool.subset(train), normalizer), Normalizer("none"), config)
        usable &= sweep.usable
        with torch.no_grad():
            logits[:, held] = sweep.heads(torch.from_numpy(normalizer(pool.clean[held]))).numpy()
            test[f] = sweep.heads(torch.from_numpy(normalizer(x_test).astype(np.float32))).numpy()
    usable &= np.isfinite(logits).all((1, 2))
    return logits, usable, k, fold, test


def map_temperature(logits: np.ndarray, y: np.ndarray, sd: float = PRIOR_SD) -> float:
    """argmin over T of n x NLL(T) + (log T)^2 / (2 sd^2): the posterior mode under log T ~ N(0, sd^2)
    (a fine grid on log T: the penalised objective need not be convex in 1/T)."""
    grid = np.exp(np.linspace(np.log(T_MIN), np.log(T_MAX), 801))
    objective = [len(y) * nll_at(logits, y, t) + np.log(t) ** 2 / (2 * sd ** 2) for t in grid]
    return float(grid[int(np.argmin(objective))])


def confidence_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The T in [T_MIN, T_MAX] at which the mean top-class probability of softmax(logits / T)
    equals the top-1 of `logits` (it falls as T rises: bisection on log T)."""
    top1 = float((logits.argmax(1) == y).mean())
    lo, hi = np.log(T_MIN), np.log(T_MAX)
    for _ in range(40):
        mid = (lo + hi) / 2
        if softmax_at(logits, np.exp(mid)).max(1).mean() > top1:
            lo = mid
        else:
            hi = mid
    return float(np.exp((lo + hi) / 2))


def candidate_picks(cv, logits: np.ndarray, y: np.ndarray, fold: np.ndarray) -> dict[str, tuple[int, float]]:
    """Candidate -> (head index, temperature) for the refit-based candidates (fold-T, map-T, near-1,
    conf-T)."""
    best, tied = cv.best, np.flatnonzero(cv.tied)
    per_fold = [fit_temperature(logits[best][fold == f], y[fold == f]) for f in np.unique(fold)]
    maps = {int(i): map_temperature(logits[i], y) for i in tied}
    map_best = min(maps, key=lambda i: nll_at(logits[i], y, maps[i]))
    near = [int(i) for i in tied if 1 / NEAR_ONE <= cv.temperatures[i] <= NEAR_ONE]
    near_best = min(near, key=lambda i: nll_at(logits[i], y)) if near else best
    return {"fold-T": (best, float(np.median(per_fold))), "map-T": (map_best, maps[map_best]),
            "near-1": (near_best, float(cv.temperatures[near_best])),
            "conf-T": (best, confidence_temperature(logits[best], y))}


def softmax_nll(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    p = softmax_at(logits, temperature)[np.arange(len(y)), y]
    return float(-np.log(np.clip(p, 1e-12, 1)).mean())


def scored(probs: np.ndarray, y: np.ndarray, names: list[str]) -> dict[str, float]:
    m = evaluate(y, probs, names, keep_samples=False, resamples=0)
    return {"top1": m.top1, "nll": m.nll, "ece": m.ece}


def prior(y: np.ndarray, c: int) -> np.ndarray:
    return np.bincount(y, minlength=c) / len(y)


def balanced_views(probs: np.ndarray, y: np.ndarray, sample_prior: np.ndarray, store_prior: np.ndarray,
                   seed: int) -> dict[str, float]:
    """The test probabilities scored on class-balanced views of the test split and after a prior
    correction (the module's docstring: bal_*, rs_*, ctl_*, prior_*)."""
    c = probs.shape[1]
    test_prior = prior(y, c)
    nll, ece = weighted_nll_ece(probs, y, (sample_prior / test_prior)[y])
    # Signed: mean top-class probability minus top-1; below 0 the head is underconfident.
    out = {"bal_nll": nll, "bal_ece": ece, "gap": float(probs.max(1).mean() - (probs.argmax(1) == y).mean())}
    rng = np.random.default_rng([seed, 7])
    k = int(np.bincount(y, minlength=c).min())
    by_class = [np.flatnonzero(y == j) for j in range(c)]
    rs, ctl = [], []
    for _ in range(RESAMPLES):
        rows = np.concatenate([rng.choice(r, k, replace=False) for r in by_class])
        rs.append(weighted_nll_ece(probs[rows], y[rows]))
        same = rng.choice(len(y), len(rows), replace=False)  # as many images, the test split's mix
        ctl.append(weighted_nll_ece(probs[same], y[same])[1])
    out.update(rs_nll=float(np.mean([r[0] for r in rs])), rs_ece=float(np.mean([r[1] for r in rs])),
               ctl_ece=float(np.mean(ctl)))
    moved = probs * (store_prior / sample_prior)
    moved /= moved.sum(1, keepdims=True)
    nll, ece = weighted_nll_ece(moved, y)
    out.update(prior_top1=float((moved.argmax(1) == y).mean()), prior_nll=nll, prior_ece=ece)
    return out


def one_run(x, y, pool, test, names, size, seed, draw: str = "balanced", candidates: bool = False) -> dict:
    start = time.perf_counter()
    rows = sample(y, pool, size, seed, draw)
    c = len(names)
    sample_prior, store_prior = prior(y[rows], c), prior(y[pool], c)
    views = lambda probs: balanced_views(probs, y[test], sample_prior, store_prior, seed)  # noqa: E731
    config = HeadConfig(seed=seed)
    data = PoolData(x[rows], y[rows], c)
    logits, usable, k, fold, fold_test = out_of_fold_and_test(data, config, x[test])
    cv = choose(logits, data.train_labels, usable, config.metric, k)
    chosen = picks(cv, logits, data.train_labels)
    if candidates:
        chosen.update(candidate_picks(cv, logits, data.train_labels, fold))
    test_logits = {}
    out = {"size": size, "seed": seed, "rows": int(len(rows)), "folds": k, "tied": int(cv.tied.sum()), "rules": {}}
    for rule, (i, temperature) in chosen.items():
        if i not in test_logits:
            sweep, normalizer = refit(data, config, i)
            tensors = {n: v.numpy() for n, v in sweep.heads.select(0).items()}
            test_logits[i] = linear_scores(tensors, normalizer(x[test]), softmax_output=False)
        lr, wd = config.grid[i]
        probs = softmax_at(test_logits[i], temperature)
        out["rules"][rule] = {**scored(probs, y[test], names), **views(probs), "oof_top1": float(cv.top1[i]),
                              "lr": lr, "weight_decay": wd, "temperature": temperature}
    if candidates:  # the k fold heads of the chosen setting, at its out-of-fold temperature
        t, members = float(cv.temperatures[cv.best]), fold_test[:, cv.best]
        lr, wd = config.grid[cv.best]
        for rule, probs in (("ens-prob", np.mean([softmax_at(z, t) for z in members], 0)),
                            ("ens-logit", softmax_at(members.mean(0), t))):
            out["rules"][rule] = {**scored(probs, y[test], names), **views(probs), "oof_top1": float(cv.top1[cv.best]),
                                  "lr": lr, "weight_decay": wd, "temperature": t}
    held = stratified_holdout(y[rows], 0.15, seed=seed)
    fit_rows, val_rows = rows[~held], rows[held]
    normalizer = Normalizer.fit("standard", x[fit_rows])
    fit = fit_baseline("logreg", normalizer(x[fit_rows]), y[fit_rows], normalizer(x[val_rows]), y[val_rows], c, seed)
    probs = linear_scores({n: np.asarray(v) for n, v in fit.tensors.items()}, normalizer(x[test]))
    out["rules"]["logreg"] = {**scored(probs, y[test], names), **views(probs), **fit.params}
    out["seconds"] = time.perf_counter() - start
    return out


def summary(runs: list[dict]) -> dict:
    """rule -> metric -> [mean, sd] over the seeds of one size."""
    out = {}
    for rule in RULES + CANDIDATES:
        if any(rule not in r["rules"] for r in runs):  # candidates measured on some runs only
            continue
        out[rule] = {}
        for metric in METRICS + VIEWS:
            if any(metric not in r["rules"][rule] for r in runs):  # runs measured before the views
                continue
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


def views_markdown(results: dict, machine: str, rules=("old", "new", "logreg")) -> str:
    """Per rule: ECE and NLL on the test split, importance-weighted to the sample's class mix
    (bal), over balanced resamples (rs) next to stratified ones of the same size (ctl), and after
    the prior correction (prior)."""
    cols = [("ece", "ECE"), ("gap", "conf - acc"), ("bal_ece", "bal ECE"), ("rs_ece", "rs ECE"),
            ("ctl_ece", "ctl ECE"), ("nll", "NLL"), ("bal_nll", "bal NLL"), ("top1", "top-1"),
            ("oof_top1", "out-of-fold top-1"), ("prior_top1", "prior top-1"), ("prior_nll", "prior NLL"),
            ("prior_ece", "prior ECE")]
    lines = [f"Mean ± sd over {results['seeds']} seeds; draw {results.get('draw', 'balanced')}; {machine}.", ""]
    for rule in rules:
        lines += [f"**{rule}**", "", "| data | images/class | " + " | ".join(t for _, t in cols) + " |",
                  "|" + "---|" * (2 + len(cols))]
        for name, sizes in results["stores"].items():
            for size, entry in sizes.items():
                s = entry["summary"][rule]
                if "bal_ece" not in s:
                    continue
                cells = [("-" if m not in s else f"{100 * s[m][0]:.1f} ± {100 * s[m][1]:.1f}" if "top1" in m else
                          f"{s[m][0]:+.3f} ± {s[m][1]:.3f}" if m == "gap" else
                          f"{s[m][0]:.3f} ± {s[m][1]:.3f}") for m, _ in cols]
                lines.append(f"| {name} | {size} ({entry['runs'][0]['rows']} images) | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def by_metric_markdown(results: dict, rules: tuple[str, ...]) -> str:
    """One table per metric (ECE, NLL, top-1, conf - acc), a column per rule: the means over the
    seeds, narrow enough to read many rules side by side."""
    lines = []
    for metric, title in (("ece", "ECE"), ("nll", "NLL"), ("top1", "top-1 (%)"), ("gap", "conf - acc")):
        lines += [f"**{title}**, mean over {results['seeds']} seeds", "",
                  "| data | images/class | " + " | ".join(rules) + " |", "|" + "---|" * (2 + len(rules))]
        for name, sizes in results["stores"].items():
            for size, entry in sizes.items():
                s = entry["summary"]
                cells = ["-" if r not in s or metric not in s[r] else
                         f"{100 * s[r][metric][0]:.1f}" if metric == "top1" else
                         f"{s[r][metric][0]:+.3f}" if metric == "gap" else f"{s[r][metric][0]:.3f}" for r in rules]
                lines.append(f"| {name} | {size} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", action="append", required=True, metavar="NAME=PATH")
    parser.add_argument("--sizes", nargs="+", default=["10", "20", "50", "full"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/calibration.json"))
    parser.add_argument("--md", type=Path, default=None, help="also write the Markdown table here")
    parser.add_argument("--rules", nargs="+", default=["old", "new", "logreg"], help="columns of the table")
    parser.add_argument("--draw", choices=("balanced", "stratified"), default="balanced",
                        help="N images of each class, or N x classes in the store's class mix")
    parser.add_argument("--candidates", action="store_true",
                        help=f"also measure the fixes for small-data underconfidence: {', '.join(CANDIDATES)}")
    parser.add_argument("--views-md", type=Path, default=None,
                        help="also write the class-balanced test views' table here")
    parser.add_argument("--by-metric-md", type=Path, default=None,
                        help="also write one table per metric (a column per rule of --rules) here")
    parser.add_argument("--machine", default=f"{platform.node()}, {platform.processor() or platform.machine()}")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (the heads are small: on a busy box more threads only wait)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {"seeds": args.seeds, "machine": args.machine, "draw": args.draw, "stores": {}}
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
                run = one_run(x, y, pool, test, names, None if size == "full" else int(size), seed, args.draw,
                              args.candidates)
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
    if args.views_md:
        args.views_md.write_text(views_markdown(results, args.machine, tuple(args.rules)))
    if args.by_metric_md:
        args.by_metric_md.write_text(by_metric_markdown(results, tuple(args.rules)))


if __name__ == "__main__":
    main()
