"""How much a result moves with the split: heads re-trained over N seeded re-splits of one store.

    r = resplit_heads("runs/cmp/stores/elpv_resnet18_224px.h5", ("linear", "logreg"), splits=5)
    r.scores["linear"][0]["top1"]    # split 0's test top-1
    r.summary("linear")["top1"]      # Spread(mean, sd, low, high) over the 5 splits

Features are read from the store once (extracted once, whatever N); each split re-assigns every
labelled, usable sample to train/val/test with the store's own fractions (stratified by class,
seeded by the split number: featx.data.splits.stratified_split) and trains each head kind with
its default settings, selected and calibrated as train-head does (a linear, MLP or logreg head's
probabilities at its temperature, fitted on out-of-fold or val predictions, never test).
Re-splits train on the clean features only: augmented views exist only for the store's own
training rows, so using them would favour those rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featx.data import DatasetOptions
from featx.data.splits import stratified_holdout, stratified_split
from featx.errors import StoreError
from featx.probes.sweep import HeadConfig
from featx.evaluation.metrics import evaluate
from featx.runtime.progress import progress_bar
from featx.heads.kinds import head_kind
from featx.heads.scoring import Normalizer, linear_scores, scores
from featx.probes.calibrated import array_temperature
from featx.probes.selection import fit_arrays
from featx.store import FeatureStore

METRICS = ("top1", "top5", "balanced_accuracy", "macro_f1", "nll", "ece")
HELD_OUT_FRACTION = 0.15  # val taken from train when the store has no val split (as train-head)
RESPLIT_NOTE = ("each split re-assigns train/val/test (stratified, seeded 0..N-1, the store's own "
                "fractions) and trains each head on the clean features extracted once (augmented views "
                "exist only for the store's own training rows, so re-splits do not use them)")


@dataclass(frozen=True)
class Spread:
    mean: float
    sd: float  # sample standard deviation over the splits (0 with one)
    low: float
    high: float


@dataclass
class Resplits:
    """Test metrics of each head kind on each re-split of one store."""

    backbone: str
    store: Path
    splits: int
    val_frac: float
    test_frac: float
    test_sizes: list[int] = field(default_factory=list)
    scores: dict[str, list[dict[str, float | None]]] = field(default_factory=dict)  # kind -> per split

    def summary(self, kind: str) -> dict[str, Spread]:
        """Mean, sd, min and max over the splits of each metric the head gives."""
        out = {}
        for metric in METRICS:
            values = [s[metric] for s in self.scores.get(kind, []) if s.get(metric) is not None]
            if values:
                a = np.asarray(values, dtype=np.float64)
                out[metric] = Spread(float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0,
                                     float(a.min()), float(a.max()))
        return out

    def to_dict(self) -> dict:
        return {"backbone": self.backbone, "store": str(self.store), "splits": self.splits,
                "val_frac": self.val_frac, "test_frac": self.test_frac, "test_sizes": self.test_sizes,
                "scores": self.scores,
                "summary": {kind: {m: vars(s) for m, s in self.summary(kind).items()} for kind in self.scores}}


def resplit_heads(store_path: str | Path, kinds: tuple[str, ...] | list[str], splits: int,
                  seed: int = 0, show_progress: bool = True) -> Resplits:
    """Train each head kind on `splits` seeded re-splits of the store's samples (seeds seed ..
    seed + splits - 1) and measure it on each split's test rows."""
    with FeatureStore(store_path) as store:
        store.require_complete()
        rows = store.rows()
        rows = rows[store.labels[rows] >= 0]
        x, y = store.read_clean(rows), store.labels[rows].astype(np.int64)
        own = store.splits[rows]
        names, backbone = list(store.class_names), store.attrs["backbone"]
    val_frac, test_frac = float(np.mean(own == "val")), float(np.mean(own == "test"))
    if not (own == "test").any():
        raise StoreError(f"{store_path}: the store has no test split, so re-splits have no test fraction "
                         "to keep (extract with --test-frac)")
    result = Resplits(backbone, Path(store_path).resolve(), splits, val_frac, test_frac,
                      scores={kind: [] for kind in kinds})
    with progress_bar(splits * len(kinds), f"{backbone}: heads on {splits} re-splits", unit="head",
                      enabled=show_progress) as advance:
        for s in range(splits):
            assigned = np.array(stratified_split(y.tolist(), DatasetOptions(
                val_frac=val_frac, test_frac=test_frac, split_seed=seed + s)), dtype=object)
            train, val, test = (np.flatnonzero(assigned == name) for name in ("train", "val", "test"))
            if not len(val):
                held = stratified_holdout(y[train], HELD_OUT_FRACTION, seed=0)
                train, val = train[~held], train[held]
            result.test_sizes.append(int(len(test)))
            for kind in kinds:
                result.scores[kind].append(_one_head(kind, x, y, train, val, test, names))
                advance(1)
    return result


def _one_head(kind: str, x: np.ndarray, y: np.ndarray, train: np.ndarray, val: np.ndarray,
              test: np.ndarray, names: list[str]) -> dict[str, float | None]:
    config = HeadConfig(head=kind).for_kind(kind)
    normalizer = Normalizer.fit(config.normalize, x[train])
    c = len(names)
    if config.torch_head:  # chosen and calibrated as train-head does (k-fold on small data, else on val)
        tensors, normalizer, t = fit_arrays(x[train], y[train], x[val], y[val], c, config)
        s = linear_scores(tensors, normalizer(x[test]), temperature=t)
    else:
        from featx.probes.baselines import fit_baseline  # scikit-learn only for these heads

        fit = fit_baseline(kind, normalizer(x[train]), y[train], normalizer(x[val]), y[val], c, config.seed)
        tensors = {k: np.asarray(v) for k, v in fit.tensors.items()}
        t = array_temperature("temperature", kind, tensors, normalizer(x[val]), y[val])  # logreg: on val
        s = scores(kind, tensors, normalizer(x[test]), fit.params, t)
    m = evaluate(y[test], s, names, probabilities=head_kind(kind).probabilistic, keep_samples=False, resamples=0)
    return {metric: getattr(m, metric) for metric in METRICS}
