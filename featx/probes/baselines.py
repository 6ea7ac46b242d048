"""scikit-learn baselines on the same cached features: logistic regression, linear SVM, k-NN.

Each searches its one hyper-parameter on the validation split and returns its model as plain
tensors (a linear layer, or the k-NN's reference set), so it is saved and used exactly like a
torch head, with no pickles.

At scale: the k-NN streams the train split block by block into its reference set (unit rows;
float16 above 50,000 rows, with an IVF index saved beside them: featx.search.knn_index), builds its
index once, searches the val split's neighbours once, at the largest k, and votes every k from
that one search; the same index then scores val and test. Up to 50,000 training rows the search
is exact and the head is what it always was; above, IVF candidates are re-ranked exactly and the
head's params say so ("neighbours").

Logistic regression and the linear SVM on more than LARGE_N (50,000) training rows are fitted
on a seeded, stratified subsample of LARGE_N rows (every class kept; train-head reads only those
rows from the store), logistic regression's C path warm-started from the smaller C: lbfgs and
liblinear pass over all the rows for each of their hundreds of iterations, so a million-row
store would cost hours; a regularised linear model over ~1,000 features has long stopped
improving at 50,000 rows. ELPV-size data (below LARGE_N) is fitted as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from featx.heads.kinds import head_kind, names
from featx.heads.scoring import scores, vote_shares

C_GRID = {"logreg": (1e-3, 1e-2, 0.1, 1.0, 10.0),
          # On standardised deep features large C overfits and liblinear crawls (minutes).
          "svm": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)}
K_GRID = (1, 5, 10, 20, 50)
BASELINES = names(backend="sklearn")  # logreg, svm, knn
LARGE_N = 50_000  # logreg and svm beyond this many training rows: a subsample (module docstring)
VAL_CHUNK = 4_096  # k-NN: val rows searched at a time (and training rows per block from arrays)


@dataclass
class BaselineFit:
    kind: str
    tensors: dict[str, np.ndarray]
    params: dict  # the chosen hyper-parameter
    search: list[dict]  # every candidate with its val top-1
    val_scores: np.ndarray | None = None  # [n_val, C] at the chosen setting, where the search made them


def subsample_rows(kind: str, y: np.ndarray, seed: int = 0) -> np.ndarray | None:
    """Positions of the training rows `kind` is fitted on at scale (module docstring), or None
    for all of them: a caller with a store reads just these rows. Only the C-searched linear
    models (C_GRID) are subsampled; the k-NN keeps every row."""
    return stratified_rows(y, LARGE_N, seed) if kind in C_GRID and len(y) > LARGE_N else None


def fit_baseline(kind: str, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                 num_classes: int, seed: int = 0, subsampled: bool = False) -> BaselineFit:
    """`subsampled`: x, y are already the subsample_rows of a larger training set."""
    if head_kind(kind, among=BASELINES).needs_reference_set:
        return _fit_knn(x, y, x_val, y_val, num_classes)
    from sklearn.linear_model import LogisticRegression  # here: ~160 MB resident, the k-NN needs none

    keep = None if subsampled else subsample_rows(kind, y, seed)
    if keep is not None:
        x, y = x[keep], y[keep]
    warm = None
    if kind == "logreg" and (subsampled or keep is not None):  # C ascending: each starts from the last
        warm = LogisticRegression(max_iter=2000, warm_start=True)
    search, best = [], None
    for value in C_GRID[kind]:
        if warm is not None:
            warm.set_params(C=value).fit(x, y)
            tensors = _as_linear(warm.coef_, warm.intercept_, warm.classes_, num_classes)
        else:
            tensors = _fit_one(kind, value, x, y, num_classes, seed)
        score = float((scores(kind, tensors, x_val, {}).argmax(1) == y_val).mean()) if len(y_val) else 0.0
        search.append({"C": value, "val_top1": score})
        if best is None or score > best[0]:
            best = (score, value, tensors)
    _, value, tensors = best
    return BaselineFit(kind, tensors, {"C": value}, search)


def _fit_knn(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
             num_classes: int) -> BaselineFit:
    blocks = ((x[a:a + VAL_CHUNK], y[a:a + VAL_CHUNK]) for a in range(0, len(y), VAL_CHUNK))
    return fit_knn(blocks, len(y), x.shape[1], [(x_val, y_val)], num_classes)


def fit_knn(train: Iterable[tuple[np.ndarray, np.ndarray]], n: int, dim: int,
            val: Iterable[tuple[np.ndarray, np.ndarray]], num_classes: int, advance=None) -> BaselineFit:
    """The k-NN head from blocks of (normalised features, labels): `n` training rows of `dim`
    features streamed into its reference set, then every k of K_GRID voted from one search of
    the val blocks at the largest k (up to VAL_CHUNK val rows searched at a time), all through
    the one index that later scores val and test (featx.search.knn_index). `advance(rows)` is called
    as training rows are added and as val rows are searched (a progress bar)."""
    from featx.search.knn_index import knn_index, reference_set

    tensors, method = reference_set(train, n, dim, advance)
    index = knn_index(tensors)
    ks = [k for k in K_GRID if k <= n]
    small = np.int8 if num_classes <= np.iinfo(np.int8).max else np.int32  # 150k x 50 labels: 7.5 MB
    found, labels = [np.zeros((0, max(ks)), small)], [np.zeros(0, np.int64)]
    for x_val, y_val in _chunks(val, VAL_CHUNK):
        ids = index.search(tensors["train_x"], x_val, max(ks)).ids
        found.append(np.where(ids >= 0, tensors["train_y"][ids], -1).astype(small))  # their labels
        labels.append(np.asarray(y_val))
        if advance:
            advance(len(x_val))
    found, y_val = np.concatenate(found), np.concatenate(labels)
    classes = np.arange(num_classes)
    search, best = [], None
    for k in ks:
        votes = vote_shares(classes, found[:, :k], num_classes)
        score = float((votes.argmax(1) == y_val).mean()) if len(y_val) else 0.0
        search.append({"k": k, "val_top1": score})
        if best is None or score > best[0]:
            best = (score, k)
    params = {"k": best[1], "num_classes": num_classes, "neighbours": method}
    # The val rows' scores at the chosen k, from the same search: at a million rows a second
    # search of 150,000 val rows for the head's val metrics would cost a minute more.
    return BaselineFit("knn", tensors, params, search, vote_shares(classes, found[:, :best[1]], num_classes))


def _chunks(blocks: Iterable[tuple[np.ndarray, np.ndarray]], rows: int):
    """The blocks regrouped into (x, y) of up to about `rows` rows (one search each)."""
    xs, ys, held = [], [], 0
    for x, y in blocks:
        xs.append(x)
        ys.append(y)
        held += len(y)
        if held >= rows:
            yield _joined(xs), np.concatenate(ys)
            xs, ys, held = [], [], 0
    if held:
        yield _joined(xs), np.concatenate(ys)


def _joined(xs: list[np.ndarray]) -> np.ndarray:
    """np.concatenate(xs), letting go of each block as it is copied (half the memory)."""
    out = np.empty((sum(len(x) for x in xs), xs[0].shape[1]), xs[0].dtype)
    at = 0
    while xs:
        x = xs.pop(0)
        out[at:at + len(x)] = x
        at += len(x)
    return out


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
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

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
