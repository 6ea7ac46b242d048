"""Choosing a head's hyper-parameters without overfitting a small val split.

On a small store, one val split of a few hundred images decides among 32 heads by a handful of
images (a 95% interval on one accuracy over 394 images is about +-4 points). k-fold
cross-validation on train+val lets every labelled non-test image vote: each fold trains the
whole batched sweep on the other folds, the out-of-fold predictions of all folds score every
head, and the chosen settings are refitted on train+val. The test split is never looked at.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from featx.errors import ConfigError
from featx.probes.feature_data import epoch_draws
from featx.probes.sweep import HeadConfig, SweepResult, head_losses, train_heads
from featx.evaluation.calibration import fit_temperature, nll_at, softmax_at
from featx.evaluation.metrics import selection_scores
from featx.evaluation.uncertainty import CONFIDENCE, RESAMPLES, SEED, ScoredSamples, resampled
from featx.heads.scoring import Normalizer

# Beyond this many train+val rows one val split is precise (+-1 point), and k sweeps cost k times
# as much: `select auto` cross-validates below it only.
CV_MAX_ROWS = 20_000
TIE_CELLS = 2_000_000  # resamples x images drawn at once by tied_with: memory stays flat
# The val path holds the val logits of this many MB of tied heads at once (N_val x C each) while
# it fits their temperatures; more tied heads take more passes over val, not more memory.
VAL_LOGITS_MB = 256


def use_cv(config: HeadConfig, rows: int, streamed: bool) -> bool:
    """Whether `config.select` means k-fold cross-validation for a store of `rows` train+val rows.
    Raises ConfigError where `select="cv"` was asked for and cannot be done."""
    why_not = ("the scikit-learn baselines search on the val split" if not config.torch_head else
               "the features stream from the store (--memory-mb)" if streamed else
               "early stopping (--patience) needs a held-out val split" if config.patience is not None else
               "one --lr and one --weight-decay leave nothing to choose" if len(config.grid) == 1 else None)
    if config.select == "cv" and why_not:
        raise ConfigError(f"--select cv: {why_not}; use --select auto or val")
    if config.select == "val" or why_not:
        return False
    return config.select == "cv" or rows <= CV_MAX_ROWS


class PoolData:
    """Rows in memory with FeatureData's training interface: each epoch gives each row one of
    its views (clean, or one of the K stored augmented ones where the row has them)."""

    streamed = False

    def __init__(self, clean: np.ndarray, labels: np.ndarray, num_classes: int,
                 aug: np.ndarray | None = None, aug_index: np.ndarray | None = None,
                 val: tuple[np.ndarray, np.ndarray] | None = None):
        self.clean, self.train_labels, self.num_classes = clean, labels, num_classes
        self.aug = aug  # [K, m, D] views; row i has them at aug_index[i] (-1: clean only)
        self.aug_index = aug_index if aug is not None else None
        self.views = 0 if aug is None else len(aug)
        self.dim = clean.shape[1]
        self.val = val if val is not None else (np.zeros((0, self.dim), np.float32), np.zeros(0, np.int64))

    @property
    def n_train(self) -> int:
        return len(self.train_labels)

    def subset(self, rows: np.ndarray, val_rows: np.ndarray | None = None) -> "PoolData":
        val = None if val_rows is None else (self.clean[val_rows], self.train_labels[val_rows])
        index = None if self.aug is None else self.aug_index[rows]
        return PoolData(self.clean[rows], self.train_labels[rows], self.num_classes, self.aug, index, val)

    def epoch(self, epoch: int, batch_size: int, seed: int,
              sample_weights: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        rng = np.random.default_rng([seed, epoch])
        n = self.n_train
        order, view = epoch_draws(rng, n, self.views, sample_weights)
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            x = self.clean[idx]
            if self.views:
                aug = (view[idx] > 0) & (self.aug_index[idx] >= 0)
                if aug.any():
                    x = x.copy()
                    x[aug] = self.aug[view[idx][aug] - 1, self.aug_index[idx][aug]]
            yield x, self.train_labels[idx]

    def split_arrays(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x, y = self.val
        return x, y, np.arange(len(y))

    def split_blocks(self, split: str):
        yield self.split_arrays(split)


@dataclass
class CrossValidation:
    best: int  # index into config.grid: the chosen head
    scores: np.ndarray  # [H] out-of-fold `metric` of every head (NaN: diverged in a fold)
    top1: np.ndarray  # [H] out-of-fold top-1
    loss: np.ndarray  # [H] out-of-fold cross-entropy
    oof_logits: np.ndarray  # [n, C] out-of-fold logits of the chosen head
    folds: int  # 0: chosen on a val split (choose_on_val), the arrays are of its images
    leader: int = 0  # the head with the best score alone (ties broken by loss): the old choice
    tied: np.ndarray | None = None  # [H] bool: score within noise of the leader's
    calibrated_loss: np.ndarray | None = None  # [H] out-of-fold cross-entropy at each head's own T
    temperatures: np.ndarray | None = None  # [H] each head's out-of-fold temperature
    labels: np.ndarray | None = None  # [n] the images' labels in oof_logits' order (choose_on_val)

    @property
    def oof_probs(self) -> np.ndarray:
        """[n, C] out-of-fold probabilities of the chosen head (uncalibrated)."""
        return softmax_at(self.oof_logits)


def fold_count(labels: np.ndarray, folds: int) -> int:
    """The folds used: `folds`, fewer when even the largest class has fewer rows (at least 2)."""
    return max(2, min(folds, int(np.bincount(labels).max())))


def stratified_folds(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold index of each row: every class dealt round-robin over the folds in seeded order."""
    rng = np.random.default_rng([seed, 1])
    fold = np.zeros(len(labels), np.int64)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        # A seeded first fold per class: rare classes do not all pile into the low folds.
        fold[rows[rng.permutation(len(rows))]] = (np.arange(len(rows)) + rng.integers(k)) % k
    return fold


def out_of_fold(pool: PoolData, config: HeadConfig,
                advance=lambda n: None) -> tuple[np.ndarray, np.ndarray, int]:
    """Train the sweep k times, each time on k-1 folds, and score every head on the held-out
    fold: (logits [H, n, C] of every pool row by the heads that did not see it, usable [H], k)."""
    k = fold_count(pool.train_labels, config.folds)
    fold = stratified_folds(pool.train_labels, k, config.seed)
    n, h = pool.n_train, len(config.grid)
    logits = np.zeros((h, n, pool.num_classes), np.float32)
    usable = np.ones(h, bool)
    for f in range(k):
        train, held = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        normalizer = Normalizer.fit(config.normalize, pool.clean[train])
        part = _normalized(pool.subset(train), normalizer)
        sweep = train_heads(part, Normalizer("none"), config, advance)
        usable &= sweep.usable
        with torch.no_grad():
            logits[:, held] = sweep.heads(torch.from_numpy(normalizer(pool.clean[held]))).numpy()
    usable &= np.isfinite(logits).all((1, 2))
    return logits, usable, k


def cross_validate(pool: PoolData, config: HeadConfig, advance=lambda n: None) -> CrossValidation:
    """k-fold cross-validation of the sweep on the pool, and the head it chooses (choose)."""
    logits, usable, k = out_of_fold(pool, config, advance)
    return choose(logits, pool.train_labels, usable, config.metric, k)


def choose(logits: np.ndarray, y: np.ndarray, usable: np.ndarray, metric: str = "top1",
           folds: int = 0) -> CrossValidation:
    """The head to keep from out-of-fold `logits` [H, n, C]: among the heads whose `metric` is
    tied with the best one's (a paired bootstrap over the same images, as the report's ties),
    the one with the lowest out-of-fold cross-entropy after its own temperature.

    The best score alone rewards overconfidence: on a few hundred images a handful of them
    separate the top heads, and the least regularised one wins, certain of its errors (issue 28).
    Within the noise of the score, cross-entropy tells the heads apart by how much their
    probabilities can be trusted; each at its own temperature, since train-head rescales the
    chosen head's logits (featx.evaluation.calibration) and what it keeps is the rescaled one."""
    h, n, c = logits.shape
    pred = logits.argmax(-1)
    scores = np.where(usable, selection_scores(pred, y, c, metric), np.nan)
    with torch.no_grad():
        loss = head_losses(torch.from_numpy(logits), torch.from_numpy(y), None).numpy()
    loss = np.where(usable & np.isfinite(loss), loss, np.inf)
    top1 = (pred == y).mean(1)
    candidates = np.flatnonzero(np.isfinite(scores))
    if not len(candidates):
        return CrossValidation(0, scores, top1, loss, logits[0], folds, 0, np.zeros(h, bool))
    leader = int(candidates[np.lexsort((loss[candidates], -scores[candidates]))[0]])
    tied = tied_with(pred, y, leader, usable, metric, c)
    temperatures = np.ones(h)
    calibrated = np.full(h, np.inf)
    for i in np.flatnonzero(tied):
        temperatures[i] = fit_temperature(logits[i], y)
        calibrated[i] = nll_at(logits[i], y, temperatures[i])
    best = int(np.argmin(calibrated))
    return CrossValidation(best, scores, top1, loss, logits[best], folds, leader, tied, calibrated, temperatures)


def choose_on_val(sweep: SweepResult, blocks: Callable[[], Iterable], metric: str = "top1") -> CrossValidation:
    """choose's rule on a val split, for a sweep selected there (large stores, streamed features,
    --select val): among the usable heads whose val `metric` is tied with the leader's (the
    sweep's best score, ties broken by loss) by the paired bootstrap, the one with the lowest val
    cross-entropy at its own temperature. `blocks()` yields the val split's (x, y, _) blocks,
    normalised as the heads take them, each time it is called. Memory: the predicted classes of
    every head (H x N_val integers) and the logits of up to VAL_LOGITS_MB of tied heads at once."""
    heads, usable, leader = sweep.heads, np.asarray(sweep.usable, bool), sweep.best
    pred, y = _val_pass(heads, blocks, None)
    c = heads.weights[-1].shape[-1]
    h = len(pred)
    scores = np.where(usable, selection_scores(pred, y, c, metric), np.nan)
    loss = np.where(usable & np.isfinite(sweep.val_loss), sweep.val_loss, np.inf)
    tied = tied_with(pred, y, leader, usable, metric, c)
    temperatures, calibrated = np.ones(h), np.full(h, np.inf)
    group = max(1, int(VAL_LOGITS_MB * 2**20 // max(1, len(y) * c * 4)))
    candidates = np.flatnonzero(tied)
    best_logits = None
    for start in range(0, len(candidates), group):
        some = candidates[start:start + group]
        logits, _ = _val_pass(heads, blocks, some)
        for j, i in enumerate(some):
            temperatures[i] = fit_temperature(logits[j], y)
            calibrated[i] = nll_at(logits[j], y, temperatures[i])
        best = int(np.argmin(calibrated))
        if best in some:  # the chosen head's logits (its temperature's fit): kept, the others let go
            best_logits = logits[list(some).index(best)].copy()
    return CrossValidation(best, scores, (pred == y).mean(1), loss, best_logits, 0, leader, tied,
                           calibrated, temperatures, y)


@torch.no_grad()
def _val_pass(heads, blocks: Callable[[], Iterable], some: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """One pass over the val blocks: (predicted class [H, n], labels) when `some` is None, else
    (logits [len(some), n, C] of those heads, labels)."""
    heads.eval()
    parts, labels = [], []
    for x, y, _ in blocks():
        if not len(y):
            continue
        z = heads(torch.from_numpy(np.asarray(x, np.float32)))
        parts.append(z.argmax(-1).numpy() if some is None else z[torch.from_numpy(some)].numpy())
        labels.append(np.asarray(y, np.int64))
    return np.concatenate(parts, 1), np.concatenate(labels)


def tied_with(pred: np.ndarray, y: np.ndarray, leader: int, usable: np.ndarray, metric: str,
              num_classes: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """[H] bool: the usable heads whose `metric` on these images is tied with the leader's: the
    95% interval of their paired difference (the same bootstrap resamples of the images for
    both, as featx.evaluation.uncertainty.paired_difference) holds 0. The leader is tied."""
    h, n = pred.shape
    kept = [ScoredSamples(y, pred[i], num_classes=num_classes) for i in range(h)]
    rng = np.random.default_rng(seed)
    chunk = max(1, TIE_CELLS // max(n, 1))
    draws = [[] for _ in range(h)]
    for start in range(0, resamples, chunk):  # the same resamples for every head: paired
        idx = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        for i in np.flatnonzero(usable):
            draws[i].append(resampled(kept[i], idx, [metric])[metric])
    tied = np.zeros(h, bool)
    lead = np.concatenate(draws[leader])
    tail = (1 - CONFIDENCE) / 2 * 100
    for i in np.flatnonzero(usable):
        lo, hi = np.percentile(np.concatenate(draws[i]) - lead, [tail, 100 - tail])
        tied[i] = lo <= 0 <= hi
    tied[leader] = True
    return tied


def refit(pool: PoolData, config: HeadConfig, index: int,
          advance=lambda n: None) -> tuple[SweepResult, Normalizer]:
    """The chosen head of the grid trained on every pool row: heads of a sweep are independent
    (same init, own rate and decay), so training it alone gives what the sweep would."""
    lr, wd = config.grid[index]
    normalizer = Normalizer.fit(config.normalize, pool.clean)
    single = replace(config, lrs=(lr,), weight_decays=(wd,))
    sweep = train_heads(_normalized(pool, normalizer), Normalizer("none"), single, advance)
    return sweep, normalizer


def _normalized(pool: PoolData, normalizer: Normalizer) -> PoolData:
    """The pool with features normalised once (not per batch and epoch)."""
    if normalizer.mode == "none":
        return pool
    aug = None if pool.aug is None else normalizer(pool.aug.reshape(-1, pool.dim)).reshape(pool.aug.shape)
    x_val, y_val = pool.val
    return PoolData(normalizer(pool.clean).astype(np.float32), pool.train_labels, pool.num_classes,
                    None if aug is None else aug.astype(np.float32), pool.aug_index,
                    (normalizer(x_val).astype(np.float32), y_val))


def fit_arrays(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, num_classes: int,
               config: HeadConfig, calibrate: str = "temperature") -> tuple[dict[str, np.ndarray], Normalizer, float]:
    """The torch head train_head would fit on these arrays, and its temperature: cross-validated
    on train+val and refitted on both when `use_cv` (temperature fitted on its out-of-fold
    predictions), else trained on train and chosen on val by choose_on_val's rule (temperature
    fitted on val). (tensors, normalizer, temperature); the temperature is 1.0 with
    `calibrate="none"` or where there is nothing held out to fit it on."""
    if use_cv(config, len(y) + len(y_val), streamed=False):
        pool = PoolData(np.concatenate([x, x_val]).astype(np.float32, copy=False),
                        np.concatenate([y, y_val]).astype(np.int64), num_classes)
        cv = cross_validate(pool, config)
        sweep, normalizer = refit(pool, config, cv.best)
        t = float(cv.temperatures[cv.best]) if calibrate == "temperature" else 1.0
        return {k: v.numpy() for k, v in sweep.heads.select(0).items()}, normalizer, t
    normalizer = Normalizer.fit(config.normalize, x)
    data = _normalized(PoolData(x, y, num_classes, val=(x_val, y_val)), normalizer)
    sweep = train_heads(data, Normalizer("none"), config)
    if not len(y_val):
        return {k: v.numpy() for k, v in sweep.heads.select(sweep.best).items()}, normalizer, 1.0
    cv = choose_on_val(sweep, lambda: data.split_blocks("val"), config.metric)
    tensors = {k: v.numpy() for k, v in sweep.heads.select(cv.best).items()}
    return tensors, normalizer, float(cv.temperatures[cv.best]) if calibrate == "temperature" else 1.0
