"""How sure a test number is: seeded bootstrap intervals over test images, paired tests between
two results scored on the same images, and which results are tied with the best.

    p = ScoredSamples(label, pred, p_true, confidence, top5)   # one row per test image
    metric_intervals(p)              # {"top1": (lo, hi), "balanced_accuracy": ..., ...}: 95%
    d = paired_difference(a, b)      # {"top1": Difference(delta, lo, hi), ...}: a - b, paired
    mcnemar(a.correct, b.correct)    # exact two-sided p-value of the top-1 difference

Intervals are percentile bootstraps: RESAMPLES resamples of the test images with replacement,
drawn from numpy's default_rng(SEED), so the same predictions always give the same interval.
A paired difference resamples the same images for both results; it is significant when its 95%
interval excludes zero, and a tie otherwise. numpy only (no scipy): this is layer 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 1000
SEED = 0
ECE_BINS = 15  # as featx.evaluation.metrics
# Metric -> "max" or "min": which way is better.
DIRECTIONS = {"top1": "max", "top5": "max", "balanced_accuracy": "max", "macro_f1": "max",
              "nll": "min", "ece": "min"}
PAIRED_TEST = (f"paired bootstrap over the same test images ({RESAMPLES} resamples, seed {SEED}): "
               f"a difference whose {CONFIDENCE:.0%} interval holds 0 is a tie")
_CELLS_PER_CHUNK = 2_000_000  # resamples x images drawn at once: memory stays flat on big test sets


@dataclass
class ScoredSamples:
    """What the bootstrap needs of each test image: true and predicted class, and (with
    probabilities) the probability of the true class, the top probability, and a top-5 hit."""

    label: np.ndarray
    pred: np.ndarray
    p_true: np.ndarray | None = None
    confidence: np.ndarray | None = None
    top5: np.ndarray | None = None  # only with 5 or more classes
    num_classes: int | None = None

    def __post_init__(self):
        self.label = np.asarray(self.label, dtype=np.int64)
        self.pred = np.asarray(self.pred, dtype=np.int64)
        for name in ("p_true", "confidence", "top5"):
            value = getattr(self, name)
            setattr(self, name, None if value is None else np.asarray(value, dtype=np.float64))
        if self.num_classes is None:
            self.num_classes = int(max(self.label.max(initial=-1), self.pred.max(initial=-1)) + 1)

    def __len__(self) -> int:
        return len(self.label)

    @property
    def correct(self) -> np.ndarray:
        return self.pred == self.label

    def metrics(self) -> list[str]:
        """The metrics these predictions can give."""
        have = {"top5": self.top5 is not None, "nll": self.p_true is not None,
                "ece": self.confidence is not None}
        return [m for m in DIRECTIONS if have.get(m, True)]

    def take(self, order: np.ndarray) -> "ScoredSamples":
        """These predictions in another order (to line up with another result's images)."""
        pick = (lambda a: None if a is None else a[order])
        return ScoredSamples(self.label[order], self.pred[order], pick(self.p_true), pick(self.confidence),
                           pick(self.top5), self.num_classes)


@dataclass(frozen=True)
class Difference:
    """A paired difference a - b of one metric and its bootstrap interval."""

    delta: float
    low: float
    high: float

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0


def resampled(p: ScoredSamples, idx: np.ndarray, metrics: list[str]) -> dict[str, np.ndarray]:
    """Each metric on each resample: idx [B, n] indexes images; returns {metric: [B]}."""
    b, n = idx.shape
    out: dict[str, np.ndarray] = {}
    correct = p.correct.astype(np.float64)
    if "top1" in metrics:
        out["top1"] = correct[idx].mean(1)
    if "top5" in metrics:
        out["top5"] = p.top5[idx].mean(1)
    if "nll" in metrics:
        out["nll"] = -np.log(np.clip(p.p_true, 1e-12, 1.0))[idx].mean(1)
    if "ece" in metrics:
        bins = bin_of(p.confidence)[idx] + ECE_BINS * np.arange(b)[:, None]
        gap = np.bincount(bins.ravel(), (correct - p.confidence)[idx].ravel(), b * ECE_BINS)
        out["ece"] = np.abs(gap.reshape(b, ECE_BINS)).sum(1) / n
    if "balanced_accuracy" in metrics or "macro_f1" in metrics:
        c = p.num_classes
        offset = c * np.arange(b)[:, None]
        true = (p.label[idx] + offset).ravel()
        support = np.bincount(true, minlength=b * c).reshape(b, c)
        predicted = np.bincount((p.pred[idx] + offset).ravel(), minlength=b * c).reshape(b, c)
        tp = np.bincount(true, correct[idx].ravel(), b * c).reshape(b, c)
        present = support > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            recall = np.where(present, tp / support, 0.0)
            f1 = np.where(present, 2 * tp / (support + predicted), 0.0)
        classes = np.maximum(present.sum(1), 1)
        out["balanced_accuracy"] = recall.sum(1) / classes
        out["macro_f1"] = f1.sum(1) / classes
    return out


def bin_of(confidence: np.ndarray, bins: int = ECE_BINS) -> np.ndarray:
    """The calibration bin of each confidence, as featx.evaluation.metrics.reliability_bins draws them."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    return np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)


def _replicates(sets: list[ScoredSamples], metrics: list[str], resamples: int,
                seed: int) -> list[dict[str, np.ndarray]]:
    """Each metric on the same `resamples` resamples of the images, for each prediction set."""
    n = len(sets[0])
    rng = np.random.default_rng(seed)
    chunk = max(1, _CELLS_PER_CHUNK // max(n, 1))
    parts: list[list[dict]] = [[] for _ in sets]
    for start in range(0, resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        for part, p in zip(parts, sets):
            part.append(resampled(p, idx, metrics))
    return [{m: np.concatenate([d[m] for d in part]) for m in metrics} for part in parts]


def _percentiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def metric_intervals(p: ScoredSamples, resamples: int = RESAMPLES, seed: int = SEED,
                     confidence: float = CONFIDENCE) -> dict[str, tuple[float, float]]:
    """The `confidence` percentile-bootstrap interval of every metric `p` can give ({} for no
    images, or resamples=0: no intervals wanted)."""
    if not len(p) or resamples <= 0:
        return {}
    metrics = p.metrics()
    draws = _replicates([p], metrics, resamples, seed)[0]
    return {m: _percentiles(draws[m], confidence) for m in metrics}


def bootstrap_interval(values: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED,
                       confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The percentile-bootstrap interval of the mean of `values` (one per image)."""
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    chunk = max(1, _CELLS_PER_CHUNK // max(len(values), 1))
    means = [values[rng.integers(0, len(values), size=(min(chunk, resamples - start), len(values)))].mean(1)
             for start in range(0, resamples, chunk)]
    means = np.concatenate(means)
    return _percentiles(means, confidence)


def paired_difference(a: ScoredSamples, b: ScoredSamples, resamples: int = RESAMPLES, seed: int = SEED,
                      confidence: float = CONFIDENCE) -> dict[str, Difference]:
    """a - b for every metric both give, on the same images resampled together (images in the
    same order in both; see align)."""
    if len(a) != len(b) or not (a.label == b.label).all():
        raise ValueError("paired_difference needs the same images, in the same order, with the same labels")
    metrics = [m for m in a.metrics() if m in b.metrics()]
    if not len(a):
        return {}
    whole_a, whole_b = (resampled(p, np.arange(len(p))[None], metrics) for p in (a, b))
    da, db = _replicates([a, b], metrics, resamples, seed)
    return {m: Difference(float(whole_a[m][0] - whole_b[m][0]), *_percentiles(da[m] - db[m], confidence))
            for m in metrics}


def align(paths_a: list[str], paths_b: list[str]) -> np.ndarray | None:
    """Indices that put b's images in a's order, or None when the two are not the same images."""
    if len(paths_a) != len(paths_b) or len(set(paths_a)) != len(paths_a):
        return None
    where = {path: i for i, path in enumerate(paths_b)}
    if set(where) != set(paths_a):
        return None
    return np.array([where[path] for path in paths_a], dtype=np.int64)


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Exact two-sided McNemar p-value: are a and b equally accurate on the same images? Only
    the images exactly one of them gets right count (a binomial test of those at 1/2)."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def better(metric: str, x: float, y: float) -> bool:
    """x is strictly better than y for `metric`."""
    return x > y if DIRECTIONS.get(metric, "max") == "max" else x < y
