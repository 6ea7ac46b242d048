"""Probes on arrays, in scikit-learn's shape: the heads of `featx train-head`, without a store.

    probe = LinearProbe().fit(X_train, y_train)       # X: backbone features [n, D]
    probe.predict_proba(X_test), probe.classes_, probe.best_params_
    cross_val_score(LinearProbe(epochs=20), X, y, cv=5)

`__init__` only stores its arguments; `fit` checks them, learns, and returns self; learned state
ends in `_`. With several learning rates or weight decays (the default for LinearProbe is the
same 32-head sweep as train-head), a seeded, stratified share of the training rows is held out
to choose one, as train-head does on a store without a val split (here the share and the seed
are the probe's `val_fraction` and `random_state`), by train-head's rule: of the settings tied
with the best held-out top-1, the lowest held-out cross-entropy at its own temperature. That
temperature divides the logits in `predict_proba` (`calibrate="none"`: as trained; a single
setting holds nothing out, so it keeps temperature 1).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from featx.data.splits import stratified_holdout
from featx.probes.sweep import HeadConfig, train_heads
from featx.heads.scoring import Normalizer, linear_scores
from featx.probes.calibrated import check_calibration
from featx.probes.selection import PoolData, choose_on_val


class LinearProbe(ClassifierMixin, BaseEstimator):
    """featx's linear head trained on feature arrays (MLPProbe for the MLP head).

    Args:
        lrs, weight_decays: one value each trains one head; several train them all at once
            and keep the best on the held-out rows. None: train-head's defaults for the kind.
        val_fraction: share of the training rows held out to choose among several settings.
        random_state: seeds the init, the shuffling and the hold-out.
        calibrate: "temperature" (fitted on the held-out rows) or "none" (train-head --calibrate).
    """

    kind = "linear"

    def __init__(self, lrs: Sequence[float] | float | None = None,
                 weight_decays: Sequence[float] | float | None = None, optimizer: str | None = None,
                 epochs: int = 30, batch_size: int = 256, schedule: str = "cosine",
                 normalize: str = "standard", balance: str = "none", label_smoothing: float = 0.0,
                 val_fraction: float = 0.15, random_state: int = 0, calibrate: str = "temperature"):
        self.lrs = lrs
        self.weight_decays = weight_decays
        self.optimizer = optimizer
        self.epochs = epochs
        self.batch_size = batch_size
        self.schedule = schedule
        self.normalize = normalize
        self.balance = balance
        self.label_smoothing = label_smoothing
        self.val_fraction = val_fraction
        self.random_state = random_state
        self.calibrate = calibrate

    def _config(self) -> HeadConfig:
        return HeadConfig(head=self.kind, lrs=self.lrs, weight_decays=self.weight_decays,
                          optimizer=self.optimizer, epochs=self.epochs, batch_size=self.batch_size,
                          schedule=self.schedule, normalize=self.normalize, balance=self.balance,
                          label_smoothing=self.label_smoothing, views=False, seed=self.random_state,
                          **self._extra_config())

    def _extra_config(self) -> dict:
        return {}

    def fit(self, X, y) -> "LinearProbe":
        X, y = validate_data(self, X, y, dtype=np.float32)
        check_classification_targets(y)
        config = self._config()
        check_calibration(self.calibrate)
        self.classes_, y_index = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            # "1 class": the words scikit-learn's check_fit2d_1sample looks for
            raise ValueError(f"{type(self).__name__} needs at least 2 classes, got {len(self.classes_)} class")
        held = (stratified_holdout(y_index, self.val_fraction, self.random_state)
                if len(config.grid) > 1 else np.zeros(len(y), dtype=bool))
        if len(config.grid) > 1 and not held.any():
            raise ValueError(f"{len(config.grid)} settings to choose from, but {len(y)} rows are too few to "
                             f"hold out {self.val_fraction:.0%} of a class; give one lr and one weight decay")
        self.normalizer_ = Normalizer.fit(config.normalize, X[~held])
        data = PoolData(X[~held], y_index[~held], len(self.classes_), val=(X[held], y_index[held]))
        sweep = train_heads(data, self.normalizer_, config)
        chosen, self.temperature_, self.search_ = sweep.best, 1.0, []
        if held.any():
            x_held, y_held = self.normalizer_(X[held]), y_index[held]
            cv = choose_on_val(sweep, lambda: [(x_held, y_held, None)], config.metric)
            chosen = cv.best
            if self.calibrate == "temperature":
                self.temperature_ = float(cv.temperatures[chosen])
            self.search_ = [{"lr": a, "weight_decay": b, "val_top1": float(t), "tied": bool(tie)}
                            for (a, b), t, tie in zip(sweep.grid, sweep.val_top1, cv.tied)]
        self.tensors_ = {k: v.numpy() for k, v in sweep.heads.select(chosen).items()}
        lr, wd = sweep.grid[chosen]
        self.best_params_ = {"lr": lr, "weight_decay": wd}
        return self

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "tensors_")
        X = validate_data(self, X, dtype=np.float32, reset=False)
        return linear_scores(self.tensors_, self.normalizer_(X), temperature=self.temperature_)

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "tensors_")
        return self.classes_[self.predict_proba(X).argmax(1)]


class MLPProbe(LinearProbe):
    """featx's MLP head (Linear-ReLU-Dropout-Linear) on feature arrays; one AdamW run by default."""

    kind = "mlp"

    def __init__(self, hidden: Sequence[int] = (512,), dropout: float = 0.4,
                 lrs: Sequence[float] | float | None = None,
                 weight_decays: Sequence[float] | float | None = None, optimizer: str | None = None,
                 epochs: int = 30, batch_size: int = 256, schedule: str = "cosine",
                 normalize: str = "standard", balance: str = "none", label_smoothing: float = 0.0,
                 val_fraction: float = 0.15, random_state: int = 0, calibrate: str = "temperature"):
        super().__init__(lrs, weight_decays, optimizer, epochs, batch_size, schedule, normalize,
                         balance, label_smoothing, val_fraction, random_state, calibrate)
        self.hidden = hidden
        self.dropout = dropout

    def _extra_config(self) -> dict:
        return {"hidden": tuple(self.hidden), "dropout": self.dropout}
