"""Seeded, stratified splits and subsets: the same samples land in the same split every run."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from featx.data.dataset import Dataset, DatasetOptions
from featx.errors import DataError


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


def subset(dataset: Dataset, n: int, seed: int = 0) -> Dataset:
    """A stratified (per split and class), seeded subset of about `n` samples, for quick runs.

    The subset is a dataset of its own (name `<name>-sub<n>`, its own fingerprint), so its
    feature store never mixes with the full dataset's.
    """
    if n <= 0:
        raise DataError(f"subset size must be positive, got {n}")
    if n >= len(dataset.samples):
        return dataset
    groups: dict[tuple[str, int], list[int]] = {}
    for i, s in enumerate(dataset.samples):
        groups.setdefault((s.split, s.label), []).append(i)
    rng = np.random.default_rng(seed)
    keys = sorted(groups)
    # Largest-remainder apportionment: exactly n samples, each group in proportion.
    quotas = np.array([len(groups[k]) * n / len(dataset.samples) for k in keys])
    takes = np.floor(quotas).astype(int)
    for j in np.argsort(-(quotas - takes), kind="stable")[: n - int(takes.sum())]:
        takes[j] += 1
    keep: list[int] = []
    for key, take in zip(keys, takes):
        members = groups[key]
        keep += [members[j] for j in rng.permutation(len(members))[:take]]
    samples = [dataset.samples[i] for i in sorted(keep)]
    return replace(dataset, name=f"{dataset.name}-sub{n}", samples=samples,
                   notes=dataset.notes + [f"stratified subset: {len(samples)} of "
                                          f"{len(dataset.samples)} samples (seed {seed})"])


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
