"""scikit-learn baselines on the same cached features: logistic regression, linear SVM, k-NN.

Each searches its one hyper-parameter on the validation split and returns its model as plain
tensors (a linear layer, or the k-NN's reference set), so it is saved and used exactly like a
torch head, with no pickles.

At scale: the k-NN searches the val split's neighbours once, at the largest k, and votes every k
from that one search. Logistic regression on more than LARGE_N (50,000) training rows is fitted on
a seeded, stratified subsample of LARGE_N rows (every class kept), its C path warm-started from
the smaller C: lbfgs passes over all the rows for each of its hundreds of iterations, so a
million-row store would cost hours; a regularised linear model over ~1,000 features has long
stopped improving at 50,000 rows. ELPV-size data (below LARGE_N) is fitted as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC

from featx.errors import ConfigError
from featx.scoring import l2_normalize, scores

C_GRID = {"logreg": (1e-3, 1e-2, 0.1, 1.0, 10.0),
          # On standardised deep features large C overfits and liblinear crawls (minutes).
          "svm": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)}
K_GRID = (1, 5, 10, 20, 50)
BASELINES = ("logreg", "svm", "knn")
LARGE_N = 50_000  # logreg beyond this many training rows: a subsample (module docstring)


@dataclass
class BaselineFit:
    kind: str
    tensors: dict[str, np.ndarray]
    params: dict  # the chosen hyper-parameter
    search: list[dict]  # every candidate with its val top-1


def fit_baseline(kind: str, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                 num_classes: int, seed: int = 0) -> BaselineFit:
    if kind not in BASELINES:
        raise ConfigError(f"unknown baseline '{kind}' (use {', '.join(BASELINES)})")
    candidates = K_GRID if kind == "knn" else C_GRID[kind]
    if kind == "knn":
        return _fit_knn(x, y, x_val, y_val, num_classes)
    warm = None
    if kind == "logreg" and len(y) > LARGE_N:
        keep = stratified_rows(y, LARGE_N, seed)
        x, y = x[keep], y[keep]
        warm = LogisticRegression(max_iter=2000, warm_start=True)  # C ascending: each starts from the last
    search, best = [], None
    for value in candidates:
        if warm is not None:
            warm.set_params(C=value).fit(x, y)
            tensors = _as_linear(warm.coef_, warm.intercept_, warm.classes_, num_classes)
        else:
            tensors = _fit_one(kind, value, x, y, num_classes, seed)
        params = {"k": value, "num_classes": num_classes}
        score = float((scores(kind, tensors, x_val, params).argmax(1) == y_val).mean()) \
            if len(y_val) else 0.0
        search.append({"k" if kind == "knn" else "C": value, "val_top1": score})
        if best is None or score > best[0]:
            best = (score, value, tensors)
    _, value, tensors = best
    params = {"k": value, "num_classes": num_classes} if kind == "knn" else {"C": value}
    return BaselineFit(kind, tensors, params, search)


def _fit_knn(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
             num_classes: int) -> BaselineFit:
    """Every k of K_GRID from one search of the val split's neighbours at the largest k."""
    from featx.neighbours import nearest

    tensors = _fit_one("knn", 0, x, y, num_classes, 0)
    ks = [k for k in K_GRID if k <= len(y)]
    found = (tensors["train_y"][nearest(x_val, tensors["train_x"], max(ks)).ids]
             if len(y_val) else np.zeros((0, max(ks)), np.int64))
    search, best = [], None
    for k in ks:
        votes = np.zeros((len(found), num_classes), np.int64)
        np.add.at(votes, (np.repeat(np.arange(len(found)), k), found[:, :k].ravel()), 1)
        score = float((votes.argmax(1) == y_val).mean()) if len(y_val) else 0.0
        search.append({"k": k, "val_top1": score})
        if best is None or score > best[0]:
            best = (score, k)
    return BaselineFit("knn", tensors, {"k": best[1], "num_classes": num_classes}, search)


def stratified_rows(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """About `n` row indices of `y`, sorted, in proportion per class (each class at least one)."""
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        take = max(1, int(round(n * len(rows) / len(y))))
        keep.append(rng.choice(rows, min(take, len(rows)), replace=False))
    return np.sort(np.concatenate(keep))


def _fit_one(kind: str, value: float, x: np.ndarray, y: np.ndarray, num_classes: int,
             seed: int) -> dict[str, np.ndarray]:
    if kind == "knn":
        return {"train_x": l2_normalize(x).astype(np.float32), "train_y": y.astype(np.int64)}
    model = (LogisticRegression(C=value, max_iter=2000) if kind == "logreg"
             else LinearSVC(C=value, dual=False, max_iter=5000, random_state=seed))
    model.fit(x, y)
    return _as_linear(model.coef_, model.intercept_, model.classes_, num_classes)


def _as_linear(coef: np.ndarray, intercept: np.ndarray, classes: np.ndarray,
               num_classes: int) -> dict[str, np.ndarray]:
    """sklearn coefficients as one linear layer over all classes (absent classes never win)."""
    weight = np.zeros((coef.shape[1], num_classes), np.float32)
    bias = np.full(num_classes, -1e4, np.float32)
    if len(classes) == 2 and coef.shape[0] == 1:  # binary: softmax([-z/2, z/2]) = sigmoid(z)
        weight[:, classes[0]], weight[:, classes[1]] = -coef[0] / 2, coef[0] / 2
        bias[classes[0]], bias[classes[1]] = -intercept[0] / 2, intercept[0] / 2
    else:
        weight[:, classes] = coef.T
        bias[classes] = intercept
    return {"layers.0.weight": weight, "layers.0.bias": bias}
