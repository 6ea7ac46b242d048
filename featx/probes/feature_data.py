"""Training data for heads, read from a feature store: in memory when it fits, streamed when not.

Each epoch gives each training image one of its views (the clean one or one of the K stored
augmented ones), so the stored views stand in for on-the-fly augmentation. In memory, the view
is drawn per image; streamed, per block of consecutive rows (one contiguous HDF5 read per block),
which keeps memory flat at the cost of coarser mixing.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from featx.data.splits import stratified_holdout
from featx.errors import StoreError
from featx.runtime.memory import total_memory_bytes
from featx.heads.scoring import Normalizer
from featx.store import FeatureStore

# Rows per streamed block: the store's chunk length along N, so a block is one chunk read.
BLOCK_ROWS = 256
# Without --memory-mb, training features stay in memory up to this share of the machine's RAM.
MEMORY_SHARE = 0.4
HELD_OUT_FRACTION = 0.15
HELD_OUT_MIN = 10


def default_memory_mb() -> float:
    """MEMORY_SHARE of the memory this process may use (the RAM, or a container's cgroup limit
    when lower), in MB; 8 GB where the platform does not say."""
    total = total_memory_bytes()
    return 8192.0 if total is None else MEMORY_SHARE * total / 2**20


def epoch_draws(rng: np.random.Generator, n: int, views: int,
                sample_weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One epoch's row order (n draws with replacement under balanced sampling) and the view each
    row gives (0 = clean, k = stored view k), in one seeded order for every training path."""
    if sample_weights is not None:
        order = rng.choice(n, size=n, replace=True, p=sample_weights / sample_weights.sum())
    else:
        order = rng.permutation(n)
    view = rng.integers(0, views + 1, size=n) if views else np.zeros(n, np.int64)
    return order, view


class FeatureData:
    """Train/val/test features of one complete store, in memory or streamed in blocks."""

    def __init__(self, store: FeatureStore, use_views: bool = True, memory_mb: float | None = None,
                 features: str = "all", hold: bool = True):
        """`features`: "all" columns, or the backbone's "final" features only (without the
        pooled block maps that `extract --pool` appends). `hold=False`: never hold the training
        rows in memory, whatever the budget (a caller that reads the rows it needs itself)."""
        store.require_complete()
        store.check_features(cosine=False)  # NaN/inf or degenerate rows: one line, not a diverged sweep
        self.store = store
        self.dim = store.final_dim if features == "final" else store.feature_dim
        self.num_classes = len(store.classes)
        ok = np.ones(len(store.labels), dtype=bool)
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
        # Held in the store's dtype (float16 halves the memory); batches become float32.
        held = np.dtype(str(store.attrs.get("dtype", "float32")))
        need = (1 + self.views) * len(self.train_rows) * self.dim * held.itemsize / 2**20
        self.streamed = need > (default_memory_mb() if memory_mb is None else memory_mb)
        self._clean = self._aug = None
        if hold and not self.streamed:
            self._clean = self._columns(store.read_clean(self.train_rows, held))
            if self.views:
                self._aug = self._columns(store.read_aug(ranks=self.train_rank, dtype=held))

    def in_memory(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(clean [n_train, D], views [K, n_train, D] or None) of the training rows held in memory."""
        if self._clean is None:
            raise StoreError(f"{self.store.path}: the training features stream from the store; "
                             "they are not held in memory")
        return self._clean.astype(np.float32), None if self._aug is None else self._aug.astype(np.float32)

    def release(self) -> None:
        """Let go of the training rows held in memory (the head is fitted; scoring reads the
        store): at a million rows they are most of the process's memory. Later reads come from
        the store."""
        self._clean = self._aug = None

    def _columns(self, x: np.ndarray) -> np.ndarray:
        """The columns the head uses (a leading block: final features come first)."""
        return x if x.shape[-1] == self.dim else np.ascontiguousarray(x[..., :self.dim])

    @property
    def n_train(self) -> int:
        return len(self.train_rows)

    def _hold_out_val(self, aug_rows: np.ndarray, labels: np.ndarray) -> None:
        """No val split (train/ + test/ folders, say): select on a seeded, stratified 15% of train."""
        train_labels = labels[aug_rows[self.train_rank]]
        held = self.train_rank[stratified_holdout(train_labels, HELD_OUT_FRACTION, seed=0)]
        self.val_rows = aug_rows[held]
        self.train_rank = np.setdiff1d(self.train_rank, held)
        self.note = (f"the store has no val split: {len(held)} training samples ({HELD_OUT_FRACTION:.0%}, "
                     "stratified, seeded) were held out to select hyper-parameters")

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
            x = x.astype(np.float64)  # E[x^2] - mean^2 needs both sums in float64
            total += x.sum(0)
            squares += (x ** 2).sum(0)
        return Normalizer.from_moments(total, squares, self.n_train)

    def epoch(self, epoch: int, batch_size: int, seed: int,
              sample_weights: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Shuffled minibatches (x, y) of one epoch; view choice and order seeded by (seed, epoch)."""
        rng = np.random.default_rng([seed, epoch])
        if self._clean is None:  # streamed, told not to hold, or released
            yield from self._streamed_epoch(rng, batch_size)
            return
        n = self.n_train
        order, view = epoch_draws(rng, n, self.views, sample_weights)
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            x = self._clean[idx].astype(np.float32)
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
        if self._clean is not None:
            source = self._clean if view == 0 else self._aug[view - 1]
            return source[start:stop].astype(np.float32), labels
        ranks = self.train_rank[start:stop]
        if view == 0:  # a block of increasing rows: the store reads just those rows
            return self._columns(self.store.read_clean(self.train_rows[start:stop])), labels
        return self._columns(self.store.read_aug(view - 1, ranks)), labels

    def split_blocks(self, split: str) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(x, y, sample rows) of the clean features of `split`, in blocks of sample rows."""
        return self.blocks_of(self.rows(split))

    def blocks_of(self, rows: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(x, y, sample rows) of the clean features of sample `rows`, BLOCK_ROWS at a time."""
        for i in range(0, len(rows), BLOCK_ROWS):
            part = rows[i:i + BLOCK_ROWS]
            yield self._columns(self.store.read_clean(part)), self.store.labels[part], part

    def normalized(self, rows: np.ndarray, normalizer: Normalizer) -> tuple[np.ndarray, np.ndarray]:
        """(x [len(rows), D] float32, normalised block by block into one array; y) of sample `rows`."""
        x = np.empty((len(rows), self.dim), np.float32)
        for i, (block, _, _) in enumerate(self.blocks_of(rows)):
            x[i * BLOCK_ROWS:i * BLOCK_ROWS + len(block)] = normalizer(block)
        return x, self.store.labels[rows].astype(np.int64)

    def split_arrays(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        parts = list(self.split_blocks(split))
        if not parts:
            return np.zeros((0, self.dim), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64)
        return tuple(np.concatenate(p) for p in zip(*parts))
