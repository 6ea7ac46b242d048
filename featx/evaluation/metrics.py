"""Classification metrics practitioners ask for, from labels and predicted probabilities.

    m = evaluate(y_true, probs, class_names, paths)
    m.top1, m.balanced_accuracy, m.macro_f1, m.per_class, m.confusion, m.nll, m.ece, m.worst
    m.intervals["top1"]     # (lo, hi): 95% bootstrap interval over the images (featx.evaluation.uncertainty)
    m.predictions()         # per-image predictions (with paths) for paired tests, or None

Probabilities may be None (a linear SVM has only scores): then NLL, ECE and the worst-error
list are left out rather than invented, and so are their intervals.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from featx.evaluation.uncertainty import CONFIDENCE, RESAMPLES, SEED, ScoredSamples, metric_intervals
from featx.runtime.display import html_table, percent

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
    # metric -> [lo, hi]: percentile bootstrap over the images; {} in results older than intervals
    intervals: dict[str, list[float]] = field(default_factory=dict)
    bootstrap: dict | None = None  # {"resamples", "seed", "confidence"} of those intervals
    # Per image, for paired tests between results on the same images: path, label, pred, and with
    # probabilities p_true, confidence (top probability), top5 (1/0, with 5 or more classes).
    samples: dict[str, list] | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def interval(self, metric: str) -> tuple[float, float] | None:
        """The 95% interval of `metric`, or None (not measured, or an older result)."""
        bounds = self.intervals.get(metric)
        return (bounds[0], bounds[1]) if bounds else None

    def predictions(self) -> tuple[list[str], ScoredSamples] | None:
        """(paths, per-image predictions) kept with these metrics, or None."""
        return predictions_of(self.samples, len(self.per_class))

    def headline(self) -> str:
        """'top-1 91.5% [87.5, 95.0], balanced 90.1% [...] on 200 images': the numbers one reads first."""
        return (f"top-1 {percent(self.top1, self.interval('top1'))}, balanced "
                f"{percent(self.balanced_accuracy, self.interval('balanced_accuracy'))} on {self.n} images")

    def __repr__(self) -> str:
        lines = [f"Metrics({self.n} images, {len(self.per_class)} classes; 95% intervals in brackets)",
                 f"  top-1 {percent(self.top1, self.interval('top1'))}   balanced accuracy "
                 f"{percent(self.balanced_accuracy, self.interval('balanced_accuracy'))}",
                 f"  macro-F1 {percent(self.macro_f1, self.interval('macro_f1'))}"
                 + (f"   top-5 {percent(self.top5, self.interval('top5'))}" if self.top5 is not None else "")]
        if self.nll is not None:
            lines.append(f"  NLL {self.nll:.3f}   ECE {self.ece:.3f}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = [(label, percent(value, self.interval(key))) for key, label, value in (
            ("top1", "top-1", self.top1), ("balanced_accuracy", "balanced accuracy", self.balanced_accuracy),
            ("macro_f1", "macro-F1", self.macro_f1), ("top5", "top-5", self.top5)) if value is not None]
        rows += [(k, f"{v:.3f}") for k, v in (("NLL", self.nll), ("ECE", self.ece)) if v is not None]
        per_class = [(c.name, f"{c.precision:.3f}", f"{c.recall:.3f}", f"{c.f1:.3f}", c.support)
                     for c in self.per_class]
        names = [c.name for c in self.per_class]
        confusion = [[name, *row] for name, row in zip(names, self.confusion)]
        return (html_table(rows, caption=f"Metrics on {self.n} images (95% intervals)")
                + html_table(per_class, header=["class", "precision", "recall", "F1", "images"])
                + html_table(confusion, header=["true \\ predicted", *names]))

    @classmethod
    def from_dict(cls, d: dict) -> "Metrics":
        """The inverse of to_dict (a head's sidecar stores its metrics this way)."""
        return cls(**{**d, "per_class": [ClassMetrics(**c) for c in d.get("per_class", [])]})


def evaluate(y_true: np.ndarray, scores: np.ndarray, class_names: list[str],
             paths: list[str] | None = None, probabilities: bool = True,
             keep_samples: bool = True, resamples: int = RESAMPLES, seed: int = SEED) -> Metrics:
    """Metrics of `scores` [n, C] (probabilities unless probabilities=False) against y_true,
    each with its 95% bootstrap interval (`resamples` resamples of the images, seeded).

    keep_samples: keep each image's prediction (with its path, when `paths` is given) in
    `Metrics.samples`, so that two results on the same images can be compared paired.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    n, c = scores.shape
    pred = scores.argmax(1)
    confusion = np.zeros((c, c), dtype=np.int64)
    np.add.at(confusion, (y_true, pred), 1)
    per_class = _per_class(confusion, class_names)
    recalls = [m.recall for m in per_class if m.support > 0]
    top5 = hits = None
    if c >= 5:
        top = np.argsort(-scores, axis=1)[:, :5]
        hits = (top == y_true[:, None]).any(1)
        top5 = float(hits.mean()) if n else 0.0
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
    kept = ScoredSamples(y_true, pred, scores[np.arange(n), y_true] if probabilities and n else None,
                       scores.max(1) if probabilities and n else None, hits, c)
    intervals = {m: [lo, hi] for m, (lo, hi) in metric_intervals(kept, resamples, seed).items()}
    return Metrics(
        n=n, top1=float((pred == y_true).mean()) if n else 0.0,
        balanced_accuracy=float(np.mean(recalls)) if recalls else 0.0,
        macro_f1=float(np.mean([m.f1 for m in per_class if m.support > 0])) if recalls else 0.0,
        top5=top5, nll=nll, ece=ece, per_class=per_class, confusion=confusion.tolist(), worst=worst,
        reliability=reliability, intervals=intervals,
        bootstrap={"resamples": resamples, "seed": seed, "confidence": CONFIDENCE} if intervals else None,
        samples=_samples(kept, paths) if keep_samples and n else None)


def _samples(p: ScoredSamples, paths: list[str] | None) -> dict[str, list]:
    out = {"path": [str(x) for x in paths] if paths is not None else None,
           "label": p.label.tolist(), "pred": p.pred.tolist()}
    for name in ("p_true", "confidence"):
        values = getattr(p, name)
        if values is not None:
            out[name] = [round(float(v), 6) for v in values]
    if p.top5 is not None:
        out["top5"] = p.top5.astype(int).tolist()
    return out


def predictions_of(samples, num_classes: int) -> tuple[list[str], ScoredSamples] | None:
    """(paths, ScoredSamples) from a result's stored `samples`, or None when there are none or they
    do not hold together (a damaged or hand-edited result is reported without pairing)."""
    if not isinstance(samples, dict):
        return None
    paths, label, pred = samples.get("path"), samples.get("label"), samples.get("pred")
    if not (isinstance(paths, list) and isinstance(label, list) and isinstance(pred, list)):
        return None
    n = len(label)
    extra = {k: samples.get(k) for k in ("p_true", "confidence", "top5")}
    columns = [paths, label, pred] + [v for v in extra.values() if v is not None]
    if n == 0 or any(not isinstance(v, list) or len(v) != n for v in columns):
        return None
    if not all(isinstance(x, str) for x in paths):
        return None
    try:
        arrays = {k: np.asarray(v, dtype=np.float64) for k, v in
                  {"label": label, "pred": pred, **{k: v for k, v in extra.items() if v is not None}}.items()}
    except (TypeError, ValueError, OverflowError):
        return None
    if not all(np.isfinite(a).all() and a.ndim == 1 for a in arrays.values()):
        return None
    lab, prd = arrays.pop("label"), arrays.pop("pred")
    if ((lab < 0) | (lab >= num_classes) | (prd < 0) | (prd >= num_classes)).any():
        return None
    return paths, ScoredSamples(lab.astype(np.int64), prd.astype(np.int64), num_classes=num_classes, **arrays)


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


def selection_scores(pred: np.ndarray, y_true: np.ndarray, num_classes: int,
                     metric: str = "top1") -> np.ndarray:
    """[H] score of H heads' predictions `pred` [H, n] by `metric` (top1 | balanced_accuracy |
    macro_f1; classes absent from y_true are left out, as in evaluate)."""
    pred = np.asarray(pred, dtype=np.int64).reshape(-1, len(y_true))
    if not len(y_true):
        return np.zeros(len(pred))
    if metric == "top1":
        return (pred == y_true).mean(1)
    confusion = np.zeros((len(pred), num_classes, num_classes), np.int64)
    heads = np.repeat(np.arange(len(pred)), len(y_true))
    np.add.at(confusion, (heads, np.tile(y_true, len(pred)), pred.ravel()), 1)
    hits = np.diagonal(confusion, axis1=1, axis2=2).astype(np.float64)
    support, predicted = confusion.sum(2), confusion.sum(1)
    present = support[0] > 0
    recall = hits / np.maximum(support, 1)
    if metric == "balanced_accuracy":
        return recall[:, present].mean(1)
    precision = hits / np.maximum(predicted, 1)
    f1 = np.where(hits > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    return f1[:, present].mean(1)
