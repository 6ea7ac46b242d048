"""Temperature scaling: one scalar per head that makes its probabilities mean what they say.

    t = fit_temperature(oof_logits, labels)     # on predictions of images the head never trained on
    probs = softmax_at(test_logits, t)          # argmax unchanged: top-1 is the same

A head trained to a small loss on a few hundred images is sure of nearly everything, its errors
included (Guo et al. 2017, "On calibration of modern neural networks"). Dividing its logits by
one temperature T > 1 softens every prediction alike and leaves the ranking of classes as it
is. T is fitted by minimising the cross-entropy of held-out predictions: the out-of-fold ones of
cross-validation, or the val split's; never the test split, which would then report its own fit.

numpy only: a head's scoring imports no more than numpy (featx.heads.scoring).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# T is kept in this range: beyond it a head is either certain of everything or of nothing, and
# a held-out set that asks for either is too small or too clean to say (all of it right, say).
T_MIN, T_MAX = 0.05, 100.0
_BISECTIONS = 40  # on log T over [T_MIN, T_MAX]: 1e-11 of it, far below any printed precision


# A temperature sets the head's mean confidence to about the top-1 of the images it is fitted on,
# and ECE >= |mean confidence - accuracy|: when that top-1 is known only to more than this (95%),
# train-head says the probabilities are rough (benchmarks/results/calibration_bounds.md).
TRUSTED_MARGIN = 0.05
_Z95 = 1.959964


@dataclass(frozen=True)
class Temperature:
    """A fitted temperature and what it was fitted on (said in the sidecar and the output)."""

    value: float
    fitted_on: str  # e.g. "out-of-fold predictions of 5-fold cross-validation (350 images)"
    nll_before: float  # held-out cross-entropy at T = 1
    nll_after: float  # ... and at `value`
    images: int = 0  # how many held-out predictions it was fitted on
    top1: float | None = None  # their top-1

    @property
    def margin(self) -> float | None:
        """95% margin of `top1` as an estimate of the head's accuracy (accuracy_margin)."""
        return None if self.top1 is None or not self.images else accuracy_margin(self.top1, self.images)

    def to_dict(self) -> dict:
        margin = self.margin
        fit = {} if margin is None else {"fit_images": self.images, "fit_top1": self.top1, "fit_margin": margin}
        return {"temperature": self.value, "fitted_on": self.fitted_on,
                "fit_nll_before": self.nll_before, "fit_nll_after": self.nll_after, **fit}


def accuracy_interval(top1: float, images: int) -> tuple[float, float]:
    """The Wilson 95% interval of an accuracy `top1` measured on `images` images: where the head's
    true accuracy may be, by chance alone (never a point when every image is right or wrong, and
    never past 0 or 1, unlike the normal approximation)."""
    n, z2 = float(images), _Z95 ** 2
    centre = (top1 + z2 / (2 * n)) / (1 + z2 / n)
    half = _Z95 / (1 + z2 / n) * np.sqrt(top1 * (1 - top1) / n + z2 / (4 * n * n))
    return float(centre - half), float(centre + half)


def accuracy_margin(top1: float, images: int) -> float:
    """Half the width of accuracy_interval."""
    lo, hi = accuracy_interval(top1, images)
    return (hi - lo) / 2


def images_for_margin(top1: float, margin: float = TRUSTED_MARGIN) -> int:
    """The fewest held-out images whose accuracy `top1` would have an accuracy_margin of at most
    `margin` (the margin shrinks as images grow: bisection on the count)."""
    lo, hi = 1, 2
    while accuracy_margin(top1, hi) > margin:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if accuracy_margin(top1, mid) > margin else (lo, mid)
    return hi


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def softmax_at(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Class probabilities [n, C] of `logits` [n, C] divided by `temperature`."""
    return np.exp(log_softmax(np.asarray(logits, dtype=np.float64) / temperature))


def nll_at(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean cross-entropy of `labels` under softmax(logits / temperature)."""
    if not len(labels):
        return 0.0
    lp = log_softmax(np.asarray(logits, dtype=np.float64) / temperature)
    return float(-lp[np.arange(len(labels)), labels].mean())


def _slope(logits: np.ndarray, labels: np.ndarray, beta: float) -> float:
    """d NLL / d beta at inverse temperature beta: E_p[z] - z_true, averaged over the images.
    NLL is convex in beta (its second derivative is the variance of z under p), so the slope
    rises with beta and its zero is the one minimum."""
    p = np.exp(log_softmax(beta * logits))
    return float(((p * logits).sum(1) - logits[np.arange(len(labels)), labels]).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T in [T_MIN, T_MAX] that minimises the cross-entropy of softmax(logits / T) on these
    held-out predictions (1.0 when there are none)."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if not len(labels) or not np.isfinite(logits).all():
        return 1.0
    lo, hi = np.log(1 / T_MAX), np.log(1 / T_MIN)  # log beta
    if _slope(logits, labels, np.exp(lo)) >= 0:
        return T_MAX
    if _slope(logits, labels, np.exp(hi)) <= 0:
        return T_MIN
    for _ in range(_BISECTIONS):
        mid = (lo + hi) / 2
        if _slope(logits, labels, np.exp(mid)) < 0:
            lo = mid
        else:
            hi = mid
    return float(1 / np.exp((lo + hi) / 2))


def temperature_of(logits: np.ndarray, labels: np.ndarray, fitted_on: str) -> Temperature:
    """fit_temperature, with the held-out cross-entropy before and after."""
    t = fit_temperature(logits, labels)
    logits, labels = np.asarray(logits), np.asarray(labels)
    top1 = float((logits.argmax(1) == labels).mean()) if len(labels) else None
    return Temperature(t, fitted_on, nll_at(logits, labels), nll_at(logits, labels, t), len(labels), top1)


def weighted_nll_ece(probs: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None,
                     bins: int = 15) -> tuple[float, float]:
    """(NLL, ECE) of probabilities [n, C] with a weight per image: the test split as if its class
    mix were another one (importance weights, e.g. sample prior / test prior of each image's
    class). Equal weights give featx.evaluation.metrics' NLL and ECE (15 confidence bins)."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    if not n:
        return 0.0, 0.0
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    nll = float(-(w * np.log(np.clip(probs[np.arange(n), labels], 1e-12, 1.0))).sum())
    confidence, correct = probs.max(1), probs.argmax(1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    gap = np.bincount(which, w * (correct - confidence), minlength=bins)  # per bin: weight x (acc - conf)
    return nll, float(np.abs(gap).sum())
