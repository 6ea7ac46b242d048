"""Which labels are probably wrong: confident learning on out-of-sample probabilities.

    found = label_suspects(x, labels, splits, num_classes, leaked)

The probe is a logistic regression on standardised clean features. Training samples get their
probabilities from a 5-fold cross-validation on the train split (each from a probe that never saw
it); val and test samples from the probe fitted on all of train. cleanlab
(`cleanlab.filter.find_label_issues`, Northcutt et al. 2021, "Confident Learning") then flags the
samples whose given label disagrees with what the probe is confident of, ranked by
self-confidence (the probability of the given label, lowest first). We use cleanlab rather than
our own copy: its per-class thresholds and pruning are the published method, and it is tested.

The same probe measures test accuracy with and without the test samples that leaked (a duplicate
in train): the gap is how much the leak inflates a linear probe's score.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

FOLDS = 5
PROBE_C = 0.01  # ELPV lite0: 5-fold accuracy 0.738 at C=0.01, 0.714 at 0.1 (and half the time)


@dataclass
class LabelFindings:
    rows: np.ndarray  # positions (in the audited rows) of the flagged samples, most suspect first
    given: np.ndarray  # [s] given label
    predicted: np.ndarray  # [s] the probe's label
    p_given: np.ndarray  # [s] probability of the given label (the ranking score)
    p_predicted: np.ndarray  # [s]
    probe_accuracy: dict = field(default_factory=dict)  # split -> accuracy (train: cross-validated)
    test_without_leaked: dict = field(default_factory=dict)  # {"all": acc, "clean": acc, "removed": n}
    note: str = ""


def label_suspects(x: np.ndarray, labels: np.ndarray, splits: np.ndarray, num_classes: int,
                   leaked: set[int], seed: int = 0) -> LabelFindings | None:
    """Flag label issues among labelled samples; None (with nothing to do) when train has fewer
    than 2 classes or a class with fewer than 2 samples."""
    from cleanlab.filter import find_label_issues

    train = np.flatnonzero((splits == "train") & (labels >= 0))
    present, counts = np.unique(labels[train], return_counts=True)
    if len(present) < 2 or counts.min() < 2:
        return None
    folds = int(min(FOLDS, counts.min()))
    code = np.full(num_classes, -1)
    code[present] = np.arange(len(present))  # classes seen in train -> 0..K'-1 (cleanlab's order)
    held = np.flatnonzero(np.isin(splits, ("val", "test")) & np.isin(labels, present))
    probs_train = _cross_validated(x[train], code[labels[train]], folds, seed)
    probe = _probe(seed).fit(x[train], code[labels[train]])
    probs_held = probe.predict_proba(x[held]) if len(held) else np.zeros((0, len(present)))
    rows = np.concatenate([train, held])
    probs = np.concatenate([probs_train, probs_held])
    given = code[labels[rows]]
    ranked = find_label_issues(given, probs, return_indices_ranked_by="self_confidence", n_jobs=1)
    pred = probs.argmax(1)
    accuracy = {split: float((pred[m] == given[m]).mean())
                for split in ("train", "val", "test") if (m := splits[rows] == split).any()}
    return LabelFindings(
        rows=rows[ranked], given=present[given[ranked]], predicted=present[pred[ranked]],
        p_given=probs[ranked, given[ranked]], p_predicted=probs[ranked, pred[ranked]],
        probe_accuracy=accuracy, test_without_leaked=_without_leaked(rows, pred, given, splits, leaked),
        note=f"logistic regression (C={PROBE_C}) on standardised clean features; train: {folds}-fold "
             "cross-validated probabilities, val/test: the probe fitted on all of train")


def _probe(seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=PROBE_C, tol=1e-3, max_iter=500, random_state=seed))


def _cross_validated(x: np.ndarray, y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return cross_val_predict(_probe(seed), x, y, cv=cv, method="predict_proba")


def _without_leaked(rows: np.ndarray, pred: np.ndarray, given: np.ndarray, splits: np.ndarray,
                    leaked: set[int]) -> dict:
    test = splits[rows] == "test"
    if not test.any():
        return {}
    clean = test & ~np.isin(rows, list(leaked))
    hit = pred == given
    return {"all": float(hit[test].mean()), "samples": int(test.sum()),
            "without_leaked": float(hit[clean].mean()) if clean.any() else None,
            "removed": int(test.sum() - clean.sum())}
