"""How low can the default head's ECE go at 10-50 images per class? Bounds for issue 28's goal.

    .venv/bin/python benchmarks/calibration_bounds.py \\
        --store ELPV-4=/work/stores/elpv4/elpv_efficientnet_lite0_224px_clean.h5 \\
        --sizes 10 20 50 --seeds 3 --out benchmarks/results/calibration_bounds.json

For each store, size and seed, the same draw and the same chosen head as benchmarks/calibration.py
(`new`: train-head's default), its test logits, and these ECEs of them (15 bins, as the report):

    oof-T       at the temperature train-head fits on out-of-fold predictions (what users get)
    oof-TB      a temperature and a bias per class, both fitted on the out-of-fold predictions
    test-T      at the temperature that minimises the test split's own cross-entropy: a cheat,
                the best any one temperature fitted by cross-entropy could do
    min-T       the lowest ECE over 241 temperatures on [T_MIN, T_MAX], chosen on the test split:
                the lowest ECE temperature scaling can reach on this head at all
    test-TB     temperature and per-class bias fitted on the test split (a cheat, as test-T)
    floor       the mean ECE of a perfectly calibrated model with test-T's probabilities: labels
                drawn from those probabilities, FLOOR_DRAWS times, on as many test images. An ECE
                estimate is biased upwards by its bins' sampling noise; this is that bias here.

If min-T is above 0.05 no temperature reaches the goal on this head; if floor is near 0.05 the
test split is too small to tell a calibrated head from one 0.05 off.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import minimize
from sklearn.linear_model import LogisticRegressionCV
from sklearn.preprocessing import StandardScaler

from calibration import load, sample
from featx.evaluation.calibration import T_MAX, T_MIN, fit_temperature, log_softmax, softmax_at, weighted_nll_ece
from featx.heads.scoring import linear_scores
from featx.probes.selection import PoolData, choose, out_of_fold, refit
from featx.probes.sweep import HeadConfig

FLOOR_DRAWS = 200
T_GRID = np.logspace(np.log10(T_MIN), np.log10(T_MAX), 241)
COLUMNS = ("oof-T", "oof-TB", "test-T", "min-T", "test-TB", "floor", "lr-cv")
LR_CV_CS = np.logspace(-5, 1, 13)


def ece(probs: np.ndarray, y: np.ndarray) -> float:
    return weighted_nll_ece(probs, y)[1]


def fit_temperature_and_bias(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """(T, b) minimising the cross-entropy of softmax(logits / T + b); b is defined up to a
    constant, which a small ridge pins (and keeps a class seen a few times from running off)."""
    z = np.asarray(logits, np.float64)
    n, c = z.shape
    start = np.concatenate([[np.log(fit_temperature(z, y))], np.zeros(c)])

    def loss_and_grad(theta):
        t, b = np.exp(theta[0]), theta[1:]
        lp = log_softmax(z / t + b)
        p = np.exp(lp)
        err = p.copy()
        err[np.arange(n), y] -= 1  # d loss / d (z/T + b) per image
        loss = -lp[np.arange(n), y].mean() + 1e-3 * (b ** 2).sum()
        grad_b = err.mean(0) + 2e-3 * b
        grad_log_t = float((err * (-z / t)).sum(1).mean())
        return loss, np.concatenate([[grad_log_t], grad_b])

    bounds = [(np.log(T_MIN), np.log(T_MAX))] + [(-20, 20)] * c
    theta = minimize(loss_and_grad, start, jac=True, method="L-BFGS-B", bounds=bounds).x
    return float(np.exp(theta[0])), theta[1:]


def logistic_cv_probs(x: np.ndarray, y: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """scikit-learn's textbook calibrated linear model: LogisticRegressionCV, C chosen by 5-fold
    log loss on the sample (standardised features)."""
    scaler = StandardScaler().fit(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs' convergence warnings at the weakest C
        model = LogisticRegressionCV(Cs=LR_CV_CS, cv=5, scoring="neg_log_loss", max_iter=2000)
        model.fit(scaler.transform(x), y)
    return model.predict_proba(scaler.transform(x_test))


def with_bias(logits: np.ndarray, t: float, b: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(np.asarray(logits, np.float64) / t + b))


def floor(probs: np.ndarray, seed: int) -> float:
    """Mean ECE of labels drawn from `probs` themselves (a perfectly calibrated model)."""
    rng = np.random.default_rng(seed)
    cum = probs.cumsum(1)
    draws = [(rng.random((len(probs), 1)) > cum).sum(1).clip(0, probs.shape[1] - 1) for _ in range(FLOOR_DRAWS)]
    return float(np.mean([ece(probs, d) for d in draws]))


def one_run(x, y, pool, test, c: int, size: int | None, seed: int, weight_decays=None) -> dict:
    start = time.perf_counter()
    rows = sample(y, pool, size, seed)
    config = HeadConfig(seed=seed, weight_decays=weight_decays)
    data = PoolData(x[rows], y[rows], c)
    logits, usable, k = out_of_fold(data, config)
    cv = choose(logits, data.train_labels, usable, config.metric, k)
    sweep, normalizer = refit(data, config, cv.best)
    tensors = {n: v.numpy() for n, v in sweep.heads.select(0).items()}
    z, yt = linear_scores(tensors, normalizer(x[test]), softmax_output=False), y[test]
    t_oof = float(cv.temperatures[cv.best])
    t_oof_b, b_oof = fit_temperature_and_bias(cv.oof_logits, data.train_labels)
    t_test = fit_temperature(z, yt)
    t_test_b, b_test = fit_temperature_and_bias(z, yt)
    grid = [ece(softmax_at(z, t), yt) for t in T_GRID]
    at_test_t = softmax_at(z, t_test)
    out = {"size": size, "seed": seed, "rows": int(len(rows)), "lr": config.grid[cv.best][0],
           "weight_decay": config.grid[cv.best][1], "top1": float((z.argmax(1) == yt).mean()),
           "oof_top1": float(cv.top1[cv.best]), "t_oof": t_oof, "t_test": t_test,
           "t_min_ece": float(T_GRID[int(np.argmin(grid))]),
           "ece": {"oof-T": ece(softmax_at(z, t_oof), yt), "oof-TB": ece(with_bias(z, t_oof_b, b_oof), yt),
                   "test-T": ece(at_test_t, yt), "min-T": float(min(grid)),
                   "test-TB": ece(with_bias(z, t_test_b, b_test), yt), "floor": floor(at_test_t, seed),
                   "lr-cv": ece(logistic_cv_probs(x[rows], y[rows], x[test]), yt)}}
    out["seconds"] = time.perf_counter() - start
    return out


def markdown(results: dict) -> str:
    lines = ["# How low can ECE go at 10-50 images per class (issue 28)", "",
             "`benchmarks/calibration_bounds.py`: the default head that `benchmarks/calibration.py` calls",
             "`new`, on the same draws, and its test ECE (15 bins) at: oof-T, the out-of-fold temperature",
             "(what train-head applies); oof-TB, a temperature and a bias per class fitted out-of-fold;",
             "test-T, the temperature fitted on the test split's own labels (a cheat: the best a",
             "cross-entropy temperature could do); min-T, the lowest ECE over 241 temperatures, chosen on",
             "the test split (the best any temperature could do); test-TB, temperature and class bias",
             "fitted on test; floor, the ECE a perfectly calibrated model with test-T's probabilities",
             f"shows on as many test images (labels drawn from its own probabilities, {FLOOR_DRAWS} times);",
             "lr-cv, scikit-learn's LogisticRegressionCV on the same sample (C by 5-fold log loss).",
             "|oof - test| is how far the sample's own (out-of-fold) top-1 is from the test split's;",
             "accuracy sd, sqrt(a(1-a)/n), how far an accuracy measured on the sample's n images",
             "strays by chance alone. ECE >= |mean confidence - accuracy|, and a head calibrated on the",
             "sample's labels sets its mean confidence from the sample's accuracy: neither column can",
             "be calibrated away.",
             f"Mean ± sd over {results['seeds']} seeds; {results['machine']}."
             + (f" The sweep's weight decays here: {', '.join(map(str, results['weight_decays']))}"
                " (train-head's: 0, 1e-5, 1e-4, 1e-3)." if results.get("weight_decays") else ""), "",
             "| data | images/class | test top-1 | out-of-fold top-1 | \\|oof - test\\| | accuracy sd | T oof | T test | "
             + " | ".join(COLUMNS) + " |", "|" + "---|" * (8 + len(COLUMNS))]
    for name, sizes in results["stores"].items():
        for size, runs in sizes.items():
            def cell(values, fmt="{:.3f}"):
                v = np.asarray(values, np.float64)
                return f"{fmt.format(v.mean())} ± {fmt.format(v.std(ddof=1) if len(v) > 1 else 0.0)}"
            cells = [cell([100 * r["top1"] for r in runs], "{:.1f}"), cell([100 * r["oof_top1"] for r in runs], "{:.1f}"),
                     cell([abs(r["oof_top1"] - r["top1"]) for r in runs]),
                     cell([np.sqrt(r["top1"] * (1 - r["top1"]) / r["rows"]) for r in runs]),
                     cell([r["t_oof"] for r in runs], "{:.1f}"), cell([r["t_test"] for r in runs], "{:.1f}")]
            cells += [cell([r["ece"][k] for r in runs]) for k in COLUMNS]
            lines.append(f"| {name} | {size} ({runs[0]['rows']} images) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", action="append", required=True, metavar="NAME=PATH")
    parser.add_argument("--sizes", nargs="+", default=["10", "20", "50"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/calibration_bounds.json"))
    parser.add_argument("--md", type=Path, default=None, help="also write the Markdown table here")
    parser.add_argument("--weight-decays", type=float, nargs="+", default=None,
                        help="the sweep's weight decays (default: train-head's)")
    parser.add_argument("--machine", default=f"{platform.node()}, {platform.processor() or platform.machine()}")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = json.loads(args.out.read_text()) if args.out.exists() else \
        {"seeds": args.seeds, "machine": args.machine, "weight_decays": args.weight_decays, "stores": {}}
    for spec in args.store:
        name, path = spec.split("=", 1)
        x, y, pool, test, names = load(path)
        for size in args.sizes:
            runs = results["stores"].setdefault(name, {}).setdefault(size, [])
            for seed in sorted(set(range(args.seeds)) - {r["seed"] for r in runs}):
                run = one_run(x, y, pool, test, len(names), None if size == "full" else int(size), seed,
                              tuple(args.weight_decays) if args.weight_decays else None)
                runs.append(run)
                print(name, size, seed, f"{run['seconds']:.0f}s lr {run['lr']} wd {run['weight_decay']} T oof {run['t_oof']:.1f} test {run['t_test']:.1f}",
                      {k: round(v, 3) for k, v in run["ece"].items()}, flush=True)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(results, indent=1) + "\n")
    table = markdown(results)
    print(table)
    if args.md:
        args.md.write_text(table)


if __name__ == "__main__":
    main()
