"""Class-balanced loss weights, one rule for heads and fine-tunes."""

from __future__ import annotations

import numpy as np


def balanced_class_weights(labels: np.ndarray, classes: int) -> np.ndarray:
    """Inverse-frequency weights, n / (classes x count) per class (float64, [classes]): a
    weighted loss then gives each class the same total weight, and the weights average 1 over
    the samples. A class without samples gets n / classes (its weight is never used)."""
    counts = np.bincount(labels, minlength=classes).astype(np.float64)
    return counts.sum() / np.maximum(counts, 1) / classes
