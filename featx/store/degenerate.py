"""Features no command can use: non-finite values, zero rows, or every column constant.

    problem = feature_problem(x)        # None, or "4 rows hold NaN or inf (a damaged store)"

A store with NaN/inf rows is damaged; one whose rows are all zero, or all the same (every column
constant: `--weights none` gives such a backbone), answers every cosine with the same number.
Audit, search and train-head would report on them (outliers at distance 1.0, similarity 0.70 for
everything, a head at chance) or fail deep in scikit-learn; featx.store.FeatureStore finds the
problem once, and every command that reads the features names it in one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class FeatureScan:
    """What a pass over the rows found, block by block."""

    rows: int = 0
    nonfinite: int = 0
    zero: int = 0
    lo: np.ndarray | None = field(default=None)  # per column minimum (finite rows)
    hi: np.ndarray | None = field(default=None)

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float32)
        if not len(x):
            return
        finite = np.isfinite(x).all(axis=1)
        self.rows += len(x)
        self.nonfinite += int((~finite).sum())
        good = x[finite]
        self.zero += int((~good.any(axis=1)).sum())
        if len(good):
            lo, hi = good.min(axis=0), good.max(axis=0)
            self.lo = lo if self.lo is None else np.minimum(self.lo, lo)
            self.hi = hi if self.hi is None else np.maximum(self.hi, hi)

    def problem(self, cosine: bool = True) -> str | None:
        """None, or the features' problem in a few words. Some zero rows are one only for
        `cosine` (audit, search: a zero row has no direction); a head can still use the rest."""
        if self.nonfinite:
            return (f"{self.nonfinite:,} of {self.rows:,} rows hold NaN or inf: a damaged store; "
                    "re-extract it with --overwrite")
        if self.rows and self.zero == self.rows:
            return f"all {self.rows:,} rows are zero (a backbone with no usable weights?)"
        if self.zero and cosine:
            return (f"{self.zero:,} of {self.rows:,} rows are all zero: no direction to compare "
                    "(re-extract them, or leave those images out)")
        if self.rows > 2 and self.lo is not None and np.array_equal(self.lo, self.hi):
            return (f"every column is constant over the {self.rows:,} rows: every image has the "
                    "same features (a backbone with no usable weights, --weights none?)")
        return None


def feature_problem(x: np.ndarray, cosine: bool = True) -> str | None:
    """The problem of the feature rows `x` [n, D] (FeatureScan.problem), or None."""
    scan = FeatureScan()
    scan.add(x)
    return scan.problem(cosine)
