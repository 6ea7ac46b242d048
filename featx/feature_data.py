"""Training data for heads, read from a feature store: in memory when it fits, streamed when not.

Each epoch gives each training image one of its views (the clean one or one of the K stored
augmented ones), so the stored views stand in for on-the-fly augmentation. In memory, the view
is drawn per image; streamed, per block of consecutive rows (one contiguous HDF5 read per block),
which keeps memory flat at the cost of coarser mixing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from featx.errors import StoreError
from featx.store import FeatureStore

# Rows per streamed block: the store's chunk length along N, so a block is one chunk read.
BLOCK_ROWS = 256
HELD_OUT_FRACTION = 0.15
HELD_OUT_MIN = 10
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
            return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return x


def scale_constant_features(std: np.ndarray) -> np.ndarray:
    """Stds with those of (nearly) constant features raised to the typical std.

    A unit that is dead on the training images (ELPV efficientnet_lite0 has one) has std ~0; with
    a tiny floor, the first new image that wakes it up would blow up through (x - mean) / std and
    decide the prediction alone. Scaled like a typical feature it moves the logits like one.
    """
    positive = std[std > 0]
    typical = float(np.median(positive)) if len(positive) else 1.0
    return np.where(std <= CONSTANT_STD * typical, typical, std)


class FeatureData:
    """Train/val/test features of one complete store, in memory or streamed in blocks."""

    def __init__(self, store: FeatureStore, use_views: bool = True, memory_mb: float | None = None):
        if not store.complete:
            raise StoreError(f"{store.path}: the store is incomplete; re-run `featx extract` "
                             "to finish it before training heads")
        self.store = store
        self.dim = int(store.f["features/clean"].shape[1])
        self.num_classes = len(store.classes)
        ok = np.ones(len(store.paths), dtype=bool)
        ok[list(store.failed)] = False
        self.ok = ok
        aug_rows = store.aug_rows
        # Training rows as ranks into features/aug (equal to sample order), minus failed samples.
        self.train_rank = np.flatnonzero(ok[aug_rows]) if len(aug_rows) else np.zeros(0, np.int64)
        self.val_rows = np.flatnonzero(ok & (store.splits == "val"))
        self.note = None
        if not len(self.val_rows) and len(self.train_rank) >= 2 * HELD_OUT_MIN:
            self._hold_out_val(aug_rows, store.labels)
        self.train_rows = aug_rows[self.train_rank]
        self.train_labels = store.labels[self.train_rows]
        if not len(self.train_rows) or self.num_classes < 2:
            raise StoreError(f"{store.path}: nothing to train on ({len(self.train_rows)} usable "
                             f"labelled training samples, {self.num_classes} classes)")
        self.views = store.num_views if use_views else 0
        need = (1 + self.views) * len(self.train_rows) * self.dim * 4 / 2**20
        self.streamed = memory_mb is not None and need > memory_mb
        self._clean = self._aug = None
        if not self.streamed:
            clean = store.f["features/clean"][:]
            self._clean = clean[self.train_rows].astype(np.float32)
            if self.views:
                self._aug = store.f["features/aug"][:, :][:, self.train_rank].astype(np.float32)

    @property
    def n_train(self) -> int:
        return len(self.train_rows)

    def _hold_out_val(self, aug_rows: np.ndarray, labels: np.ndarray) -> None:
        """No val split (train/ + test/ folders, say): select on a seeded, stratified 15% of train."""
        rng = np.random.default_rng(0)
        held = []
        for label in np.unique(labels[aug_rows[self.train_rank]]):
            members = self.train_rank[labels[aug_rows[self.train_rank]] == label]
            take = int(round(len(members) * HELD_OUT_FRACTION))
            if 0 < take < len(members):
                held += list(rng.choice(members, size=take, replace=False))
        held = np.sort(np.array(held, dtype=np.int64))
        self.val_rows = aug_rows[held]
        self.train_rank = np.setdiff1d(self.train_rank, held)
        self.note = (f"the store has no val split: {len(held)} training samples (15%, stratified, "
                     "seeded) were held out to select hyper-parameters")

    def rows(self, split: str) -> np.ndarray:
        """Usable sample rows of `split`, increasing; "train" without the rows held out as val."""
        if split == "val":
            return self.val_rows
        if split == "train":
            return self.train_rows
        return np.flatnonzero(self.ok & (self.store.splits == split))

    def fit_normalizer(self, mode: str) -> Normalizer:
        if mode != "standard":
            return Normalizer(mode)
        total = np.zeros(self.dim, np.float64)
        squares = np.zeros(self.dim, np.float64)
        for x, _ in self._blocks_in_order(view=0):
            total += x.sum(0)
            squares += (x.astype(np.float64) ** 2).sum(0)
        n = max(self.n_train, 1)
        mean = total / n
        std = np.sqrt(np.maximum(squares / n - mean**2, 0.0))
        return Normalizer("standard", mean.astype(np.float32), scale_constant_features(std).astype(np.float32))

    def epoch(self, epoch: int, batch_size: int, seed: int,
              sample_weights: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Shuffled minibatches (x, y) of one epoch; view choice and order seeded by (seed, epoch)."""
        rng = np.random.default_rng([seed, epoch])
        if self.streamed:
            yield from self._streamed_epoch(rng, batch_size)
            return
        n = self.n_train
        if sample_weights is not None:  # balanced sampling: n draws with replacement
            order = rng.choice(n, size=n, replace=True, p=sample_weights / sample_weights.sum())
        else:
            order = rng.permutation(n)
        view = rng.integers(0, self.views + 1, size=n) if self.views else np.zeros(n, np.int64)
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            x = self._clean[idx].copy()
            aug = view[idx] > 0
            if aug.any():
                x[aug] = self._aug[view[idx][aug] - 1, idx[aug]]
            yield x, self.train_labels[idx]

    def _streamed_epoch(self, rng: np.random.Generator, batch_size: int):
        starts = np.arange(0, self.n_train, BLOCK_ROWS)
        for start in rng.permutation(starts):
            view = int(rng.integers(0, self.views + 1)) if self.views else 0
            x, y = self._read_block(int(start), view)
            order = rng.permutation(len(y))
            for i in range(0, len(y), batch_size):
                idx = order[i:i + batch_size]
                yield x[idx], y[idx]

    def _blocks_in_order(self, view: int):
        for start in range(0, self.n_train, BLOCK_ROWS):
            yield self._read_block(start, view)

    def _read_block(self, start: int, view: int) -> tuple[np.ndarray, np.ndarray]:
        stop = min(start + BLOCK_ROWS, self.n_train)
        labels = self.train_labels[start:stop]
        if not self.streamed:
            source = self._clean if view == 0 else self._aug[view - 1]
            return source[start:stop], labels
        ranks = self.train_rank[start:stop]
        if view == 0:  # increasing row lists: h5py reads just those rows
            return self.store.f["features/clean"][self.train_rows[start:stop]].astype(np.float32), labels
        block = self.store.f["features/aug"][view - 1, ranks[0]:ranks[-1] + 1]
        return block[ranks - ranks[0]].astype(np.float32), labels

    def split_blocks(self, split: str) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(x, y, sample rows) of the clean features of `split`, in blocks of sample rows."""
        rows = self.rows(split)
        clean = self.store.f["features/clean"]
        for i in range(0, len(rows), BLOCK_ROWS):
            part = rows[i:i + BLOCK_ROWS]
            yield clean[part].astype(np.float32), self.store.labels[part], part

    def split_arrays(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        parts = list(self.split_blocks(split))
        if not parts:
            return np.zeros((0, self.dim), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64)
        return tuple(np.concatenate(p) for p in zip(*parts))
