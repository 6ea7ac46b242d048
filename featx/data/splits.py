"""Seeded, stratified splits and subsets: the same samples land in the same split every run."""

from __future__ import annotations

import numpy as np

from featx.data.records import DatasetOptions


def stratified_split(labels: list[int], options: DatasetOptions) -> list[str]:
    """Seeded, per-class split into train/val/test; unlabeled (-1) samples stay unlabeled."""
    splits = ["unlabeled" if y < 0 else "train" for y in labels]
    rng = np.random.default_rng(options.split_seed)
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        if y >= 0:
            by_class.setdefault(y, []).append(i)
    for y in sorted(by_class):
        members = [by_class[y][j] for j in rng.permutation(len(by_class[y]))]
        n_test = int(round(len(members) * options.test_frac))
        n_val = int(round(len(members) * options.val_frac))
        if n_test + n_val >= len(members):  # tiny classes keep at least one training image
            n_val = max(0, min(n_val, len(members) - 1 - n_test))
            n_test = max(0, min(n_test, len(members) - 1 - n_val))
        for i in members[:n_test]:
            splits[i] = "test"
        for i in members[n_test:n_test + n_val]:
            splits[i] = "val"
    return splits


def stratified_holdout(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a seeded, stratified `fraction` of rows (none from a class of one); the
    rows a head selects its settings on when the data has no val split (train-head, LinearProbe)."""
    rng = np.random.default_rng(seed)
    held = np.zeros(len(y), dtype=bool)
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        take = int(round(len(members) * fraction))
        if 0 < take < len(members):
            held[rng.choice(members, size=take, replace=False)] = True
    return held
