"""The head refitted at every labelling round: logistic regression on standardised features.

A simulated labelling curve refits a head dozens of times per strategy and seed, so it must take
well under a second on a few thousand rows; train-head's 32-head sweep with its held-out share
would also spend labels the simulation is counting. One setting (C = 1 on standardised
features) is used at every budget, so the curve compares strategies, not tuning.
"""

from __future__ import annotations

import warnings

import numpy as np

C = 1.0  # inverse L2 strength on standardised features
MAX_ITER = 300


class FastHead:
    """fit(x, y) then predict_proba / predict; a single labelled class predicts that class."""

    def fit(self, x: np.ndarray, y: np.ndarray, seed: int = 0) -> "FastHead":
        from sklearn.linear_model import LogisticRegression

        x = np.asarray(x, np.float64)
        self.mean_ = x.mean(axis=0)
        self.scale_ = np.where(x.std(axis=0) > 1e-8, x.std(axis=0), 1.0)
        self.classes_ = np.unique(y)
        self.model_ = None
        if len(self.classes_) > 1:
            with warnings.catch_warnings():  # not converged in MAX_ITER: the head is still usable
                warnings.simplefilter("ignore")
                self.model_ = LogisticRegression(C=C, max_iter=MAX_ITER, random_state=seed).fit(
                    (x - self.mean_) / self.scale_, y)
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """[n, len(classes_)] probabilities."""
        if self.model_ is None:
            return np.ones((len(x), 1))
        return self.model_.predict_proba((np.asarray(x, np.float64) - self.mean_) / self.scale_)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(x), axis=1)]
