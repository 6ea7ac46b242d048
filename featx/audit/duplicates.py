"""Duplicates and leakage: pairs of samples that are the same picture, and val/test samples whose
copy sits in train (every accuracy measured on them is inflated).

    pairs = duplicate_pairs(source, found, hashes, settings)    # exact + near, one table
    leaks = leakage(pairs, labels, splits)                      # per val/test sample

A near-duplicate is a pair whose clean features have cosine >= `threshold` AND whose 64-bit pixel
hashes differ in <= `hash_bits` bits. Features alone cannot do it: on ELPV different cells reach
cosine 0.98 while a resized, re-encoded copy can fall to 0.89 (featx/audit/pixels.py). When the
pixels cannot be read (dataset moved, or pixels=False) only the features decide, at the stricter
`threshold_without_pixels`, and the report says so.

Candidates come from two searches: each sample's k nearest by features (featx.search.neighbours) with
cosine >= the threshold, and every pair of pixel hashes within `hash_bits` (exact, FAISS binary
index); each candidate's cosine is then computed exactly from the stored features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from featx.audit.pixels import PixelHashes, hamming
from featx.search.neighbours import Neighbours, Rows, hamming_pairs, pair_cosines


@dataclass(frozen=True)
class DuplicateSettings:
    threshold: float = 0.85  # cosine, with the pixel hash confirming (ELPV copies: 0.89-0.99)
    hash_bits: int = 4  # of 64; ELPV copies 0-4, different cells typically 8-16
    threshold_without_pixels: float = 0.97  # cosine alone (ELPV: 1,054 of 3.4M pairs above it)


@dataclass
class Pairs:
    """Duplicate pairs (a < b, positions in the audited rows) with how they were found."""

    ab: np.ndarray  # [p, 2] int64
    cosine: np.ndarray  # [p] float32
    bits: np.ndarray  # [p] int64, -1 where a pixel hash is missing
    exact: np.ndarray  # [p] bool: same file bytes (sha256)

    def __len__(self) -> int:
        return len(self.ab)


def duplicate_pairs(source: Rows, found: Neighbours, hashes: PixelHashes | None,
                    settings: DuplicateSettings) -> Pairs:
    """Exact duplicates (same sha256) and near-duplicates among the rows of `source`.

    `found` holds each row's nearest rows by features; `hashes` (None: pixels skipped) are per
    row of `source`.
    """
    with_pixels = hashes is not None and bool(hashes.ok.any())
    floor = settings.threshold if with_pixels else settings.threshold_without_pixels
    candidates = [_feature_candidates(found, floor)]
    exact = _exact_groups_pairs(hashes.sha256) if hashes is not None else np.zeros((0, 2), np.int64)
    candidates.append(exact)
    if with_pixels:
        ok = np.flatnonzero(hashes.ok)
        close, _ = hamming_pairs(hashes.codes[ok], settings.hash_bits)
        candidates.append(ok[close])
    ab = np.unique(np.concatenate(candidates).reshape(-1, 2), axis=0)
    cosine = pair_cosines(source, ab)
    bits = np.full(len(ab), -1, np.int64)
    is_exact = np.zeros(len(ab), bool)
    if hashes is not None and len(ab):
        both = hashes.ok[ab[:, 0]] & hashes.ok[ab[:, 1]]
        bits[both] = hamming(hashes.codes[ab[both, 0]], hashes.codes[ab[both, 1]])
        sha = np.array([s or "" for s in hashes.sha256], dtype=object)
        is_exact = (sha[ab[:, 0]] == sha[ab[:, 1]]) & (sha[ab[:, 0]] != "")
    near = np.where(bits >= 0, (cosine >= settings.threshold) & (bits <= settings.hash_bits),
                    cosine >= settings.threshold_without_pixels)
    keep = near | is_exact
    order = np.lexsort((-cosine[keep], ~is_exact[keep]))  # exact first, then by similarity
    return Pairs(ab[keep][order], cosine[keep][order], bits[keep][order], is_exact[keep][order])


def _feature_candidates(found: Neighbours, floor: float) -> np.ndarray:
    n, k = found.ids.shape
    a = np.repeat(np.arange(n), k)
    b = found.ids.ravel()
    keep = (found.sims.ravel() >= floor) & (b >= 0)
    ab = np.stack([a[keep], b[keep]], 1)
    return np.sort(ab, axis=1).astype(np.int64)


def _exact_groups_pairs(sha256: list[str | None]) -> np.ndarray:
    """Every pair of rows with the same file bytes (a group of g gives g(g-1)/2 pairs)."""
    out = [(g[x], g[y]) for g in exact_groups(sha256) for x in range(len(g)) for y in range(x + 1, len(g))]
    return np.array(out, np.int64).reshape(-1, 2)


def exact_groups(sha256: list[str | None]) -> list[list[int]]:
    """Groups (>= 2 rows) of identical files, each sorted, in order of first row."""
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(sha256):
        if s:
            groups.setdefault(s, []).append(i)
    return [g for g in groups.values() if len(g) > 1]


@dataclass
class Leak:
    """A val/test sample with a duplicate in train."""

    row: int  # position of the val/test sample
    train_rows: list[int]  # its duplicates in train
    best_cosine: float
    conflicting: bool  # some duplicate in train carries another label


def leakage(pairs: Pairs, labels: np.ndarray, splits: np.ndarray) -> list[Leak]:
    """Val/test samples with an exact or near duplicate in train, in row order."""
    found: dict[int, Leak] = {}
    for (a, b), cos in zip(pairs.ab, pairs.cosine):
        for held, train in ((a, b), (b, a)):
            if splits[held] in ("val", "test") and splits[train] == "train":
                leak = found.setdefault(int(held), Leak(int(held), [], float(cos), False))
                leak.train_rows.append(int(train))
                leak.best_cosine = max(leak.best_cosine, float(cos))
                if labels[train] != labels[held] and labels[held] >= 0 and labels[train] >= 0:
                    leak.conflicting = True
    return [found[r] for r in sorted(found)]


def leakage_by_class(leaks: list[Leak], labels: np.ndarray, splits: np.ndarray,
                     classes: list[str]) -> list[dict]:
    """Per split and class of the held-out sample: how many, how many leaked (same label / other)."""
    out = []
    by_row = {leak.row: leak for leak in leaks}
    for split in ("val", "test"):
        for c, name in enumerate(classes):
            members = np.flatnonzero((splits == split) & (labels == c))
            if not len(members):
                continue
            leaked = [by_row[r] for r in members if r in by_row]
            conflicting = sum(leak.conflicting for leak in leaked)
            out.append({"split": split, "class": name, "samples": int(len(members)),
                        "leaked_same_label": len(leaked) - conflicting,
                        "leaked_conflicting_label": conflicting})
    return out
