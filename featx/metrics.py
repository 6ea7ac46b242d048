"""Classification metrics practitioners ask for, from labels and predicted probabilities.

    m = evaluate(y_true, probs, class_names, paths)
    m.top1, m.balanced_accuracy, m.macro_f1, m.per_class, m.confusion, m.nll, m.ece, m.worst

Probabilities may be None (a linear SVM has only scores): then NLL, ECE and the worst-error
list are left out rather than invented.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

ECE_BINS = 15
WORST_ERRORS = 10


@dataclass
class ClassMetrics:
    name: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass
class Metrics:
    n: int
    top1: float
    balanced_accuracy: float
    macro_f1: float
    top5: float | None  # only with 5 or more classes
    nll: float | None
    ece: float | None
    per_class: list[ClassMetrics]
    confusion: list[list[int]]  # rows = true class, columns = predicted
    worst: list[dict] = field(default_factory=list)  # highest per-image cross-entropy
    reliability: list[dict] = field(default_factory=list)  # per confidence bin, for the diagram

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Metrics":
        """The inverse of to_dict (a head's sidecar stores its metrics this way)."""
        return cls(**{**d, "per_class": [ClassMetrics(**c) for c in d.get("per_class", [])]})


def evaluate(y_true: np.ndarray, scores: np.ndarray, class_names: list[str],
             paths: list[str] | None = None, probabilities: bool = True) -> Metrics:
    """Metrics of `scores` [n, C] (probabilities unless probabilities=False) against y_true."""
    y_true = np.asarray(y_true, dtype=np.int64)
    n, c = scores.shape
    pred = scores.argmax(1)
    confusion = np.zeros((c, c), dtype=np.int64)
    np.add.at(confusion, (y_true, pred), 1)
    per_class = _per_class(confusion, class_names)
    recalls = [m.recall for m in per_class if m.support > 0]
    top5 = None
    if c >= 5:
        top = np.argsort(-scores, axis=1)[:, :5]
        top5 = float((top == y_true[:, None]).any(1).mean()) if n else 0.0
    nll = ece = None
    worst: list[dict] = []
    reliability: list[dict] = []
    if probabilities and n:
        p_true = np.clip(scores[np.arange(n), y_true], 1e-12, 1.0)
        losses = -np.log(p_true)
        nll = float(losses.mean())
        ece = expected_calibration_error(scores, y_true)
        reliability = reliability_bins(scores, y_true)
        worst = _worst(losses, y_true, pred, scores, class_names, paths)
    return Metrics(
        n=n, top1=float((pred == y_true).mean()) if n else 0.0,
        balanced_accuracy=float(np.mean(recalls)) if recalls else 0.0,
        macro_f1=float(np.mean([m.f1 for m in per_class if m.support > 0])) if recalls else 0.0,
        top5=top5, nll=nll, ece=ece, per_class=per_class, confusion=confusion.tolist(), worst=worst,
        reliability=reliability)


def _per_class(confusion: np.ndarray, names: list[str]) -> list[ClassMetrics]:
    out = []
    for i, name in enumerate(names):
        tp = confusion[i, i]
        predicted, support = confusion[:, i].sum(), confusion[i].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out.append(ClassMetrics(name, float(precision), float(recall), float(f1), int(support)))
    return out


def reliability_bins(probs: np.ndarray, y_true: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """Non-empty confidence bins: their range, mean confidence, accuracy and size."""
    confidence = probs.max(1)
    correct = probs.argmax(1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    out = []
    for b in range(bins):
        members = which == b
        if members.any():
            out.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": int(members.sum()),
                        "confidence": float(confidence[members].mean()),
                        "accuracy": float(correct[members].mean())})
    return out


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, bins: int = ECE_BINS) -> float:
    """Confidence-binned |accuracy - confidence|, weighted by bin size (Guo et al. 2017)."""
    n = len(y_true)
    return float(sum(b["count"] / n * abs(b["accuracy"] - b["confidence"])
                     for b in reliability_bins(probs, y_true, bins))) if n else 0.0


def _worst(losses, y_true, pred, probs, names, paths) -> list[dict]:
    order = np.argsort(-losses, kind="stable")[:WORST_ERRORS]
    return [{"index": int(i), "path": paths[i] if paths is not None else None,
             "true": names[y_true[i]], "predicted": names[pred[i]],
             "p_true": float(probs[i, y_true[i]]), "p_predicted": float(probs[i, pred[i]]),
             "cross_entropy": float(losses[i])} for i in order if pred[i] != y_true[i]]
