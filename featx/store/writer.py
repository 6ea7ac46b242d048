"""Writing a store: create or check it, commit batches of rows, mark it complete.

    with StoreLock(path):
        status = prepare_store(path, dataset, spec)     # created | resumed | complete
        writer = StoreWriter(path)
        writer.write_batch(start, stop, clean, train_start, aug, failed)
        writer.finish(seconds, images_per_second)

Why it survives SIGKILL at any moment (docs/reliability.md, 1-3): a batch commits as write rows, flush,
mark done, flush. A kill loses at most the batch in flight, and resume recomputes it from the
done masks; a store is marked complete only once every row is done.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from featx.runtime.atomic import remove_stale_temp_files
from featx.data import Dataset, with_content_hashes
from featx.errors import StoreError
from featx.store.check import check_layout
from featx.store.reader import open_h5
from featx.store.names import renames
from featx.store.update import check_same_layout
from featx.store.schema import (EXECUTION_KEYS, REASON_BYTES, WRITE_ERRORS, StoreSpec, create_store,
                                differences, write_error)


def prepare_store(path: Path, dataset: Dataset, spec: StoreSpec, overwrite: bool = False) -> str:
    """Create the store, or check an existing one matches `spec`. Call with the lock held.

    Returns "created", "resumed" or "complete".
    """
    remove_stale_temp_files(path)  # a creation killed before its rename
    if path.exists() and overwrite:
        path.unlink()
    if path.exists():
        return "complete" if _check_same(path, dataset, spec) else "resumed"
    create_store(path, dataset, spec)
    return "created"


def store_state(path: Path, dataset: Dataset, spec: StoreSpec, allow_update: bool = True) -> str | None:
    """What the file at `path` is for `dataset` made as `spec` asks, read without a lock:
    None (no store), "complete", "resumable" (same data, unfinished) or "changed" (same settings,
    other data: an update, featx.store.update). Other settings are the StoreError of prepare_store;
    for an update they include how the rows were computed (engine, device, decode, amp). Without
    `allow_update`, other data is the same StoreError, explaining the change in files."""
    _sweep(path)  # an update killed in its final write left STORE.h5.tmp-PID (store-sized)
    if not path.is_file():
        return None
    with open_h5(path) as f:
        check_layout(f, path)
        attrs = dict(f.attrs)
        complete = bool(attrs.get("complete", False))
        # Same files elsewhere (a moved dataset) is an update too: it records where the data is now.
        moved = os.path.abspath(str(attrs.get("dataset_root", ""))) != os.path.abspath(dataset.root)
        same_listing = attrs.get("dataset_fingerprint") == dataset.fingerprint
        changed = allow_update and (not same_listing or moved or renames(f, dataset) or not _same_bytes(f, dataset))
        found = differences(attrs, spec, f, dataset, resuming=changed or not complete,
                            with_dataset=not allow_update)
        if not allow_update and renames(f, dataset):  # a rename is an update, refused like any
            found = [*found, "the class names --class-map gives differ from the store's (without "
                     "--no-update, the store is renamed with no forward)"]
    if changed and not found:
        check_same_layout(path, attrs, dataset)
    if found:
        extra = (" (new rows must be computed as the store's were, to update it)"
                 if changed and any(k in " ".join(found) for k in EXECUTION_KEYS) else "")
        raise StoreError(f"{path} was made with other settings: {'; '.join(found)}{extra}. "
                         "Use --overwrite to replace it, or --out to write elsewhere")
    return "changed" if changed else "complete" if complete else "resumable"


def _sweep(path: Path) -> None:
    """Remove what a killed writer of `path` left (dead processes' temporary files only)."""
    try:
        remove_stale_temp_files(path)
    except OSError:  # a read-only folder: nothing of ours can be there to sweep
        pass


def _same_bytes(f, dataset: Dataset) -> bool:
    """Do the files still hold the bytes the store recorded? The listing's fingerprint covers
    (path, label, split, size, mtime): a rewrite of the same size with its mtime restored
    (`touch -r`, `cp -p` of a regenerated file) needs the content hash. Class-folder and archive
    listings hash every file already; other layouts are hashed here (once per process)."""
    if "sha256" not in f["samples"] or f["samples/sha256"].shape[0] != len(dataset.samples):
        return True  # a store before content hashes: its listing is all there is to compare
    recorded = f["samples/sha256"][:]
    hashed = with_content_hashes(dataset).samples
    return all(r == s.sha256.encode() for r, s in zip(recorded, hashed))


def is_complete(path: Path, dataset: Dataset, spec: StoreSpec) -> bool:
    """Is `path` a complete store of `dataset` made as `spec` asks? No lock is needed (a complete
    store is never written again), so this works in a read-only folder; another store at
    `path` is the same error as in prepare_store."""
    if not path.is_file():
        return False
    with open_h5(path) as f:
        if not f.attrs.get("complete", 0):
            return False
    return _check_same(path, dataset, spec)


def _check_same(path: Path, dataset: Dataset, spec: StoreSpec) -> bool:
    """Raise StoreError unless the store at `path` is `spec`'s; returns whether it is complete."""
    with open_h5(path) as f:
        check_layout(f, path)
        complete = bool(f.attrs.get("complete", False))
        found = differences(dict(f.attrs), spec, f, dataset, resuming=not complete)
    if found:
        raise StoreError(f"{path} was made with other settings: {'; '.join(found)}. "
                         "Use --overwrite to replace it, or --out to write elsewhere")
    return complete


def read_done(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The done masks: clean [N] and augmented [K, N_train], as booleans."""
    with open_h5(path) as f:
        return f["done/clean"][:].astype(bool), f["done/aug"][:].astype(bool)


class StoreWriter:
    """Writes batches of rows into a prepared store; the caller holds the StoreLock."""

    def __init__(self, path: Path):
        self.path = path
        self.f = open_h5(path, "r+")
        self.clean = self.f["features/clean"]
        self.aug = self.f["features/aug"] if "aug" in self.f["features"] else None
        cut = self.f.attrs.get("cut", "")
        self.maps = self.f[f"cut/{cut}"] if cut else None

    @property
    def feature_shape(self) -> tuple[int, ...]:
        """Shape of one row of features: (D,)."""
        return tuple(self.clean.shape[1:])

    @property
    def map_shape(self) -> tuple[int, ...] | None:
        """Shape of one image's cut maps (C, H, W), or None without --cut."""
        return tuple(self.maps["clean"].shape[1:]) if self.maps is not None else None

    def write_batch(self, start: int, stop: int, clean: np.ndarray, train_start: int,
                    aug: np.ndarray | None, failed: dict[int, str],
                    maps: tuple[np.ndarray, np.ndarray | None] | None = None) -> None:
        """Rows [start, stop) of clean features, training rows [train_start, ...) of views,
        and the same rows of the cut maps (clean, aug) when the store has a cut."""
        n_aug = aug.shape[1] if aug is not None else 0
        try:
            self.clean[start:stop] = clean
            if n_aug:
                self.aug[:, train_start:train_start + n_aug] = aug
            if maps is not None:
                self._write_maps(start, stop, train_start, *maps)
            for row, reason in failed.items():
                self.f["failed/reason"][row] = reason.encode("utf-8")[:REASON_BYTES]
            self.f.flush()  # rows reach the file before they are marked done
            self.f["done/clean"][start:stop] = 1
            if n_aug:
                self.f["done/aug"][:, train_start:train_start + n_aug] = 1
            self.f.flush()
        except WRITE_ERRORS as exc:
            raise self._failed(exc, "writing rows") from None

    def _write_maps(self, start: int, stop: int, train_start: int, clean: np.ndarray,
                    aug: np.ndarray | None) -> None:
        self.maps["clean"][start:stop] = clean
        if aug is not None and aug.shape[1]:
            self.maps["aug"][:, train_start:train_start + aug.shape[1]] = aug

    def finish(self, seconds: float, images_per_second: float) -> None:
        """Record the run's timing; mark the store complete if every row is done."""
        done = self.f["done/clean"][:].all() and self.f["done/aug"][:].all()
        failed = int((self.f["failed/reason"][:] != b"").sum())
        try:
            self.f.attrs.modify("extract_seconds", np.float64(seconds))
            self.f.attrs.modify("images_per_second", np.float64(images_per_second))
            self.f.attrs.modify("num_failed", np.int64(failed))
            self.f.flush()
            if done:  # only a store whose every row is written is ever marked complete
                self.f.attrs.modify("complete", np.uint8(1))
                self.f.flush()
        except WRITE_ERRORS as exc:
            raise self._failed(exc, "finishing") from None

    def _failed(self, exc: BaseException, doing: str) -> StoreError:
        """The one line for a failed write; done rows stay valid (each batch commits whole)."""
        error = write_error(self.path, exc, doing)
        return StoreError(f"{error}; rows written so far are kept: free space or fix the cause, "
                          "then re-run the same command to resume")

    def close(self) -> None:
        try:
            self.f.close()
        except WRITE_ERRORS as exc:  # the last flush; rows marked done were flushed before
            raise self._failed(exc, "closing") from None
