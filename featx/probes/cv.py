"""train_head's cross-validated path: select on k folds of train+val, refit on all of them.

A head selected this way has no held-out val split left; its "val" metrics are the chosen
settings' out-of-fold predictions over train+val, which are honest (no image is scored by a head
that saw it) and cover every train+val image instead of one val split.
"""

from __future__ import annotations

import numpy as np

from featx.probes.feature_data import FeatureData
from featx.heads.io import WARM_START
from featx.probes.sweep import HeadConfig, budget_epochs
from featx.evaluation.metrics import evaluate
from featx.runtime.progress import progress_bar
from featx.heads.scoring import linear_scores
from featx.evaluation.calibration import softmax_at, temperature_of
from featx.probes.selection import CrossValidation, PoolData, cross_validate, fold_count, refit


def pool_of(data: FeatureData) -> tuple[PoolData, np.ndarray]:
    """Train and val rows of `data` as one in-memory pool (views where the store has them), and
    their sample rows."""
    clean, aug = data.in_memory()
    x_val, y_val, val_rows = data.split_arrays("val")
    n_train = data.n_train
    index = np.concatenate([np.arange(n_train), np.full(len(y_val), -1)]) if aug is not None else None
    pool = PoolData(np.concatenate([clean, x_val]).astype(np.float32, copy=False),
                    np.concatenate([data.train_labels, y_val]).astype(np.int64), data.num_classes, aug, index)
    return pool, np.concatenate([data.train_rows, val_rows])


def fit_cross_validated(data: FeatureData, config: HeadConfig, show_progress: bool,
                        calibrate: str = "temperature"):
    """((tensors, params, search, curve, score), normalizer, out-of-fold Metrics, selection,
    Temperature or None): the out-of-fold metrics at that temperature, the score at 1."""
    pool, rows = pool_of(data)
    folds = fold_count(pool.train_labels, config.folds)
    steps = budget_epochs(config.epochs, pool.n_train) * (folds + 1)
    with progress_bar(steps, f"cross-validate {len(config.grid)} {config.head} head(s), "
                      f"{folds} folds", unit="epoch", enabled=show_progress) as advance:
        cv = cross_validate(pool, config, advance)
        sweep, normalizer = refit(pool, config, cv.best, advance)
        # The same settings on the train split only: what `finetune` starts from, so that its
        # val split (its epoch 0 included) scores a head that never saw those images.
        warm, warm_normalizer = refit(pool.subset(np.arange(data.n_train)), config, cv.best)
    tensors = {k: v.numpy() for k, v in sweep.heads.select(0).items()}
    tensors.update({f"{WARM_START}{k}": v.numpy() for k, v in warm.heads.select(0).items()})
    if warm_normalizer.mode == "standard":
        tensors.update({f"{WARM_START}norm.mean": warm_normalizer.mean, f"{WARM_START}norm.std": warm_normalizer.std})
    lr, wd = config.grid[cv.best]
    search = [candidate(config, i, cv) for i in range(len(config.grid))]
    curve = [{**c, "val_loss": None, "val_top1": None} for c in sweep.curve]
    params = {"lr": lr, "weight_decay": wd, "epochs_run": sweep.epochs_run}
    store = data.store
    temperature = None
    if calibrate == "temperature":  # the chosen head's own, fitted on its out-of-fold logits
        temperature = temperature_of(cv.oof_logits, pool.train_labels,
                                     f"out-of-fold predictions of {cv.folds}-fold cross-validation "
                                     f"({pool.n_train} images)")
    # Per-image predictions are kept for test only (paired comparisons): not 20,000 rows of them.
    oof = evaluate(pool.train_labels, softmax_at(cv.oof_logits, temperature.value if temperature else 1.0),
                   list(store.class_names), store.paths_of(rows), True, keep_samples=False)
    selection = {"method": "cv", "folds": cv.folds, "metric": config.metric, "rows": int(pool.n_train),
                 "counts": np.bincount(pool.train_labels, minlength=pool.num_classes).tolist(),
                 "score": float(cv.scores[cv.best]), "tied": int(cv.tied.sum()),
                 "leader": {"lr": config.grid[cv.leader][0], "weight_decay": config.grid[cv.leader][1],
                            config.metric: float(cv.scores[cv.leader])},
                 "why": why_chosen(cv, config, pool.n_train)}
    scoring = {k: v for k, v in tensors.items() if not k.startswith(WARM_START)}
    fitted = (tensors, params, search, curve, lambda x: linear_scores(scoring, x))
    return fitted, normalizer, oof, selection, temperature


def why_chosen(cv: CrossValidation, config: HeadConfig, rows: int) -> str:
    """What train-head prints after "selected by": the folds (or the val split, where cv.folds is
    0), the tie with the best score and the cross-entropy that decided among the tied settings."""
    lr, wd = config.grid[cv.best]
    metric, n = config.metric, len(config.grid)
    if cv.folds:
        start, on, end = (f"{cv.folds}-fold cross-validation on train+val ({rows} images): ", "out-of-fold",
                          "; refitted on all of them")
    else:
        start, on, end = f"the val split ({rows} images): ", "val", ""
    chosen = f"lr {lr:g}, weight decay {wd:g}"
    if cv.calibrated_loss is None or int(cv.tied.sum()) == 1:
        return (start + f"{chosen} had the best {on} {metric} ({cv.scores[cv.best]:.1%}) of {n} settings, "
                f"no other within its noise{end}")
    lead_lr, lead_wd = config.grid[cv.leader]
    best = (f"the best, lr {lead_lr:g}, weight decay {lead_wd:g}" if cv.leader != cv.best else "the best")
    return (start + f"{int(cv.tied.sum())} of {n} settings had {'an' if on[0] in 'aeiou' else 'a'} {on} {metric} "
            f"tied with {best} ({cv.scores[cv.leader]:.1%}; paired bootstrap, 95%); of those, {chosen} "
            f"({cv.scores[cv.best]:.1%}) had the lowest {on} cross-entropy at its own temperature "
            f"({cv.calibrated_loss[cv.best]:.3f}"
            + (f" vs {cv.calibrated_loss[cv.leader]:.3f} for the best {metric}" if cv.leader != cv.best else "")
            + f"): the least overconfident{end}")


def candidate(config: HeadConfig, i: int, cv: CrossValidation) -> dict:
    """The sidecar's search entry of setting i: its scores, whether it tied with the best and,
    if so, the cross-entropy at its own temperature that chose among the tied."""
    lr, wd = config.grid[i]
    if not np.isfinite(cv.scores[i]):
        return {"lr": lr, "weight_decay": wd, "val_top1": None, "val_loss": None, "diverged": True}
    out = {"lr": lr, "weight_decay": wd, "val_top1": float(cv.top1[i]), "val_loss": float(cv.loss[i]),
           f"val_{config.metric}": float(cv.scores[i]), "tied": bool(cv.tied[i])}
    if cv.tied[i]:
        out.update(val_loss_calibrated=float(cv.calibrated_loss[i]), temperature=float(cv.temperatures[i]))
    return out
