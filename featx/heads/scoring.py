"""A trained head applied to features, in numpy only: normalisation, then class scores.

This is all that loading a head and predicting from features needs, so it imports neither
torch's data stack, h5py, scikit-learn nor PIL (`import featx; featx.load_head(...)` stays light).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from featx.heads.kinds import head_kind
from featx.search.neighbours import unit

CONSTANT_STD = 1e-3  # a feature whose std is below this share of the typical std counts as constant


@dataclass
class Normalizer:
    """Feature standardisation learnt on the training clean features (kept with the head)."""

    mode: str  # none | standard | l2
    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.mode == "standard":
            return (x - self.mean) / self.std
        if self.mode == "l2":
            return unit(x)
        return x

    @classmethod
    def fit(cls, mode: str, x: np.ndarray) -> "Normalizer":
        """Learn the normalisation from training features `x` [n, D] held in memory."""
        if mode != "standard":
            return cls(mode)
        x64 = x.astype(np.float64)
        return cls.from_moments(x64.sum(0), (x64 ** 2).sum(0), len(x))

    @classmethod
    def from_moments(cls, total: np.ndarray, squares: np.ndarray, n: int) -> "Normalizer":
        """Standardisation from running sums (stores read block by block use this)."""
        n = max(n, 1)
        mean = total / n
        std = np.sqrt(np.maximum(squares / n - mean ** 2, 0.0))
        return cls("standard", mean.astype(np.float32), scale_constant_features(std).astype(np.float32))


def scale_constant_features(std: np.ndarray) -> np.ndarray:
    """Stds with those of (nearly) constant features raised to the typical std.

    A unit that is dead on the training images (ELPV efficientnet_lite0 has one) has std ~0; with
    a tiny floor, the first new image that wakes it up would blow up through (x - mean) / std and
    decide the prediction alone. Scaled like a typical feature it moves the logits like one.
    """
    positive = std[std > 0]
    typical = float(np.median(positive)) if len(positive) else 1.0
    return np.where(std <= CONSTANT_STD * typical, typical, std)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def linear_scores(tensors: dict[str, np.ndarray], x: np.ndarray, softmax_output: bool = True,
                  temperature: float = 1.0) -> np.ndarray:
    """Run layers.{i}.weight/bias with ReLU between them; softmax of the logits divided by
    `temperature` at the end if asked (the head's calibration: featx.evaluation.calibration)."""
    h = x
    n_layers = sum(1 for key in tensors if key.endswith(".weight") and key.startswith("layers."))
    for i in range(n_layers):
        w, b = tensors[f"layers.{i}.weight"], tensors[f"layers.{i}.bias"]
        if i == n_layers - 1 and softmax_output and temperature != 1.0:
            # Folded into the last layer, as the ONNX export does: both compute the same products.
            w, b = w / np.float32(temperature), b / np.float32(temperature)
        h = h @ w + b
        if i < n_layers - 1:
            h = np.maximum(h, 0)
    return softmax(h) if softmax_output else h


def knn_scores(tensors: dict[str, np.ndarray], x: np.ndarray, k: int, num_classes: int) -> np.ndarray:
    """Vote shares of the k nearest training features by cosine similarity: [n, C].

    The search is featx.search.knn_index's, built once per head (exact FAISS search up to its
    EXACT_MAX_ROWS reference rows, IVF candidates re-ranked exactly above) and reused by every
    later call with the same `train_x`."""
    from featx.search.knn_index import knn_index

    k = min(k, len(tensors["train_x"]))
    found = knn_index(tensors).search(tensors["train_x"], x, k).ids  # (n, k)
    return vote_shares(tensors["train_y"], found, num_classes)


def vote_shares(labels: np.ndarray, found: np.ndarray, num_classes: int) -> np.ndarray:
    """[n, C] share of each class among the labels of the neighbours `found` [n, k] (-1: none)."""
    n, k = found.shape
    votes = np.zeros((n, num_classes), np.float64)
    rows = np.arange(n)
    for j in range(k):  # one neighbour rank at a time: no row twice, memory O(n)
        hit = found[:, j] >= 0
        votes[rows[hit], labels[found[hit, j]]] += 1.0
    return votes / max(k, 1)


def scores(kind: str, tensors: dict[str, np.ndarray], x: np.ndarray, params: dict,
           temperature: float = 1.0) -> np.ndarray:
    """Class scores [n, C]: probabilities for linear/MLP/logreg/k-NN heads (the softmax ones at
    `temperature`), margins for the SVM."""
    spec = head_kind(kind)
    if spec.needs_reference_set:
        labels = tensors["train_y"]
        num_classes = int(params.get("num_classes", labels.max() + 1))
        return knn_scores(tensors, x, int(params["k"]), num_classes)
    return linear_scores(tensors, x, softmax_output=spec.probabilistic, temperature=temperature)
