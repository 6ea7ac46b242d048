"""`featx label-curve STORE`: how many labels a head needs, simulated on a fully labelled store.

    result = label_curve("stores/elpv.h5", CurveConfig(strategies=("random", "margin")))
    result.labels_to_95["margin"]      # labels to reach 95% of the full-data test top-1
    result.write("runs/curve")         # curve.json + curve.png

The train split's labels are hidden; each strategy starts from one random label per class and
asks for more, budget by budget (C x 1, 2, 3, 5, 7, 10, 15, ..., about x1.5 a step, up to the
whole train split); at each budget the head (featx.explore.fast_head) is refitted on the labels revealed so
far and scored on the test split (val when there is none). Over the seeds: the mean and a
bootstrap 95% interval of the mean. The k-shot curve draws k random labels per class.

Features: the clean final ones, unit length, then PCA to `pca_dims` fitted on the train rows
(no labels used): the head and the strategies see the same space, and a round takes
milliseconds on ELPV. Every number of a run comes from the same head, so the full-data
accuracy that the 95% is measured against is this head's, not train-head's.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from featx.audit.run import StoreRows
from featx.errors import ConfigError, StoreError
from featx.explore.fast_head import FastHead
from featx.explore.strategies import STRATEGIES, check_strategy, choose, NEEDS_PROBABILITIES
from featx.runtime.atomic import atomic_write, atomic_write_text, make_output_folder
from featx.store import FeatureStore

KSHOTS = (1, 2, 5, 10, 25, 50)
PER_CLASS_STEPS = (1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500, 700, 1000, 1500, 2000, 3000, 5000)
TARGET = 0.95  # share of the full-data accuracy that "labels needed" is counted to


@dataclass(frozen=True)
class CurveConfig:
    strategies: tuple[str, ...] = ("random", "margin", "coreset", "typiclust")
    seeds: int = 3
    budgets: tuple[int, ...] | None = None  # numbers of labels; None: C x PER_CLASS_STEPS, then all
    kshots: tuple[int, ...] = KSHOTS
    pca_dims: int | None = 128  # None: the features as stored
    pool_limit: int | None = None  # train rows drawn from (a seeded subsample); None: all
    bootstrap: int = 1000

    def __post_init__(self):
        if not self.strategies:
            raise ConfigError("--strategy: give at least one")
        for s in self.strategies:
            check_strategy(s)
        if self.seeds < 1:
            raise ConfigError(f"--seeds {self.seeds}: must be at least 1")
        if self.budgets is not None and (not self.budgets or min(self.budgets) < 1):
            raise ConfigError(f"--budget {self.budgets}: numbers of labels, each at least 1")
        if any(k < 1 for k in self.kshots):
            raise ConfigError(f"--kshot {self.kshots}: labels per class, each at least 1")


@dataclass
class CurveResult:
    store: str
    classes: list[str]
    train_rows: int
    eval_split: str
    eval_rows: int
    full: dict  # top1, balanced of the head on every train label
    curves: dict[str, list[dict]]  # strategy -> per budget: labels, top1/balanced mean, lo, hi, runs
    kshot: list[dict]
    labels_to_95: dict[str, int | None]  # None: not reached below the whole train split
    seconds: dict[str, float]
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def write(self, folder: str | Path) -> dict[str, Path]:
        folder = Path(folder)
        make_output_folder(folder)
        files = {"json": atomic_write_text(folder / "curve.json", json.dumps(self.to_dict(), indent=1) + "\n")}
        files["plot"] = atomic_write(folder / "curve.png", lambda tmp: _plot(self, tmp))
        return files


def label_curve(store: str | Path, config: CurveConfig = CurveConfig(), log=print) -> CurveResult:
    """Simulated labelling on `store` (every train row labelled), per strategy and seed."""
    from threadpoolctl import threadpool_limits

    # Hundreds of small fits: BLAS threads cost more than they give (ELPV's 1,551 x 128 fit took
    # 0.39 s on one thread, 15.9 s with the default threads on the busy 2-core dev box).
    with threadpool_limits(limits=1):
        return _label_curve(store, config, log)


def _label_curve(store, config: CurveConfig, log) -> CurveResult:
    x_train, y_train, x_eval, y_eval, classes, eval_split = _data(store, config)
    budgets = _budgets(config, len(classes), len(y_train))
    full_head = FastHead().fit(x_train, y_train)
    full = _scores(full_head, x_eval, y_eval)
    curves, seconds, labels_to_95 = {}, {}, {}
    for strategy in dict.fromkeys(config.strategies):
        t = time.perf_counter()
        runs = [_simulate(strategy, x_train, y_train, x_eval, y_eval, budgets, seed) for seed in range(config.seeds)]
        seconds[strategy] = round(time.perf_counter() - t, 2)
        curves[strategy] = [_summarise({"labels": b}, [r[i] for r in runs], config.bootstrap)
                            for i, b in enumerate(budgets)]
        reached = [p["labels"] for p in curves[strategy] if p["top1_mean"] >= TARGET * full["top1"]]
        labels_to_95[strategy] = int(reached[0]) if reached else None
        log(f"{strategy}: {seconds[strategy]} s; 95% of full top-1 ({full['top1']:.3f}) at "
            f"{labels_to_95[strategy] if reached else 'more than the train split'} labels")
    kshot = [_summarise({"per_class": k}, [_kshot(k, x_train, y_train, x_eval, y_eval, s)
                                           for s in range(config.seeds)], config.bootstrap)
             for k in config.kshots if k < np.bincount(y_train).max()]
    kshot.append({"per_class": "all", "labels": int(len(y_train)), **{f"{m}_mean": full[m] for m in full}})
    return CurveResult(str(Path(store).resolve()), classes, int(len(y_train)), eval_split, int(len(y_eval)),
                       full, curves, kshot, labels_to_95, seconds,
                       {**asdict(config), "head": "logistic regression (C=1) on standardised features",
                        "target": TARGET})


def _data(store, config: CurveConfig):
    with FeatureStore(store) as st:
        st.require_complete()
        train = st.rows("train")
        eval_split = "test" if len(st.rows("test")) else "val"
        held = st.rows(eval_split)
        if not len(held):
            raise StoreError(f"{store}: no test or val samples to score the curve on")
        if (st.labels[train] < 0).any() or (st.labels[held] < 0).any():
            raise StoreError(f"{store}: the curve needs every train and {eval_split} sample labelled "
                             "(it hides the labels itself)")
        if config.pool_limit is not None and len(train) > config.pool_limit:
            train = np.sort(np.random.default_rng(0).choice(train, config.pool_limit, replace=False))
        if len(np.unique(st.labels[train])) < 2:
            raise StoreError(f"{store}: the train split holds fewer than 2 classes")
        source = StoreRows(st, np.concatenate([train, held]))
        x = source.take(np.arange(source.rows))
        y = st.labels[np.concatenate([train, held])].astype(np.int64)
        classes = list(st.classes)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = len(train)
    if config.pca_dims is not None and config.pca_dims < x.shape[1]:
        from sklearn.decomposition import PCA

        pca = PCA(min(config.pca_dims, n), random_state=0).fit(x[:n])
        x = pca.transform(x).astype(np.float32)
    return x[:n], y[:n], x[n:], y[n:], classes, eval_split


def _budgets(config: CurveConfig, num_classes: int, n: int) -> list[int]:
    steps = config.budgets or [num_classes * s for s in PER_CLASS_STEPS] + [n]
    return sorted({min(int(b), n) for b in steps})


def _simulate(strategy, x, y, x_eval, y_eval, budgets, seed) -> list[dict]:
    """One run: the head's test scores at each budget."""
    rng = np.random.default_rng(seed)
    labelled = _per_class(y, 1, rng)
    if len(labelled) < budgets[0]:
        rest = np.setdiff1d(np.arange(len(y)), labelled)
        labelled = np.concatenate([labelled, rng.choice(rest, budgets[0] - len(labelled), replace=False)])
    out = []
    for i, budget in enumerate(budgets):
        if budget > len(labelled):
            pool = np.setdiff1d(np.arange(len(y)), labelled)
            probabilities = head.predict_proba(x[pool]) if strategy in NEEDS_PROBABILITIES else None
            picked, _ = choose(strategy, x[pool], x[labelled], y[labelled], probabilities,
                               budget - len(labelled), seed * 1000 + i,
                               len(np.unique(y)))
            labelled = np.concatenate([labelled, pool[picked]])
        head = FastHead().fit(x[labelled], y[labelled], seed)
        out.append(_scores(head, x_eval, y_eval))
    return out


def _kshot(k: int, x, y, x_eval, y_eval, seed: int) -> dict:
    rows = _per_class(y, k, np.random.default_rng(10_000 + seed))
    return {**_scores(FastHead().fit(x[rows], y[rows], seed), x_eval, y_eval), "labels": len(rows)}


def _per_class(y: np.ndarray, k: int, rng) -> np.ndarray:
    return np.concatenate([rng.choice(np.flatnonzero(y == c), min(k, int((y == c).sum())), replace=False)
                           for c in np.unique(y)])


def _scores(head: FastHead, x: np.ndarray, y: np.ndarray) -> dict:
    from sklearn.metrics import balanced_accuracy_score

    pred = head.predict(x)
    return {"top1": round(float((pred == y).mean()), 5),
            "balanced": round(float(balanced_accuracy_score(y, pred)), 5)}


def _summarise(point: dict, runs: list[dict], bootstrap: int) -> dict:
    """Mean over seeds and a bootstrap 95% interval of that mean, per metric."""
    rng = np.random.default_rng(0)
    for metric in ("top1", "balanced"):
        values = np.array([r[metric] for r in runs])
        means = values[rng.integers(0, len(values), (bootstrap, len(values)))].mean(axis=1)
        point[f"{metric}_mean"] = round(float(values.mean()), 5)
        point[f"{metric}_lo"], point[f"{metric}_hi"] = (round(float(v), 5) for v in np.percentile(means, [2.5, 97.5]))
        point[f"{metric}_runs"] = values.tolist()
    if "labels" not in point:
        point["labels"] = int(np.mean([r["labels"] for r in runs]))
    return point


def _plot(result: CurveResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, metric in zip(axes[:2], ("top1", "balanced")):
        for strategy, points in result.curves.items():
            n = [p["labels"] for p in points]
            ax.plot(n, [p[f"{metric}_mean"] for p in points], marker="o", ms=3, label=strategy)
            ax.fill_between(n, [p[f"{metric}_lo"] for p in points], [p[f"{metric}_hi"] for p in points], alpha=0.2)
        ax.axhline(TARGET * result.full[metric], color="grey", ls="--", lw=1, label=f"{TARGET:.0%} of all labels")
        ax.set(xscale="log", xlabel="labels", ylabel=f"{result.eval_split} {metric}", title=f"{metric} vs labels")
        ax.legend(fontsize=8)
    shots = [p for p in result.kshot if p["per_class"] != "all"]
    for metric in ("top1", "balanced"):
        axes[2].plot([p["per_class"] for p in shots], [p[f"{metric}_mean"] for p in shots], marker="o", label=metric)
        axes[2].axhline(result.full[metric], ls=":", lw=1)
    axes[2].set(xscale="log", xlabel="labels per class", title="k-shot (dotted: all labels)")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=90)
    plt.close(fig)


__all__ = ["CurveConfig", "CurveResult", "KSHOTS", "STRATEGIES", "label_curve"]
