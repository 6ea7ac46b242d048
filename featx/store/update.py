"""Living stores: a changed dataset costs only its new images (docs/store.md, "Updates").

    dataset, plan = plan_update(path, dataset)      # which rows keep their old numbers
    ...extract plan.compute rows into a delta store (featx.extraction.store_run)...
    assemble_update(path, dataset, plan, delta)    # the new store, atomically in place

A sample is the same when its bytes are: every row records its content hash (samples/sha256).
Deciding what to hash again uses the size and mtime the store saw (same path, size and mtime:
the stored hash stands), so a no-op costs no reads and a moved or copied dataset is read once.

A row of the new dataset keeps the old store's numbers when its content was extracted there and
did not fail, and, for a training sample with augmented views, when it was a training sample
under the same path (view k is seeded from (seed, path, k): a moved file gets the views a fresh
extraction would give it). Every other row is computed. `assemble_update` then writes the new
store from the two sources, every row-indexed table generically (features, views, cut maps,
masks, reasons, and any table a later featx adds), copying numbers bit for bit, and replaces the
old file atomically: until that rename the old store is intact, so a kill at any moment leaves
the old store or the new one, and the delta store resumes like any store.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import h5py
import numpy as np

from featx.version import __version__
from featx.runtime.atomic import atomic_write
from featx.data import Dataset, hash_files
from featx.data.folders import is_unlabeled_folder
from featx.errors import StoreError
from featx.store.names import stored_names, with_store_names
from featx.store.versions import change_words, history
from featx.store.reader import open_store_file
from featx.store.schema import (EXECUTION_KEYS, IDENTITY_KEYS, WRITE_ERRORS, StoreSpec, plain, short,
                                write_error, write_layout)

# Tables rebuilt from the new dataset rather than copied row by row.
REBUILT = ("classes", "class_names", "features/aug_rows")
# Bytes of one block of rows read and written at a time (cut maps can be 100 kB a row).
BLOCK_BYTES = 32 * 2**20


@dataclass
class UpdatePlan:
    """Where each row of the new store comes from, and what changed, in counts."""

    source: np.ndarray  # [N] old row whose numbers the new row keeps, or -1: computed
    compute: np.ndarray  # new rows to extract, increasing (the delta store's rows, in order)
    counts: dict = field(default_factory=dict)  # new, changed, removed, kept, relabelled, ...
    notes: list[str] = field(default_factory=list)  # e.g. a class gone, its images unlabelled now

    def summary(self) -> str:
        """'+240 new, 12 changed, 3 removed, 2,369 kept' (and what else happened)."""
        c = self.counts
        text = f"+{c['new']:,} new, {c['changed']:,} changed, {c['removed']:,} removed, {c['kept']:,} kept"
        extra = change_words(c)
        views = len(self.compute) - c["new"] - c["changed"] - c.get("retried", 0)
        if views > 0:  # view k is seeded by the sample's path: a moved training image gets new ones
            extra.append(f"{views:,} re-extracted for their views (moved, or new to train)")
        return text + (f" ({', '.join(extra)})" if extra else "") + "".join(f"; {n}" for n in self.notes)


@dataclass
class _Old:
    """The old store's sample tables."""

    paths: list[str]
    classes: list[str]
    labels: list[str]  # class names (-1: "")
    splits: list[str]
    stats: list[tuple[int, int]]
    shas: list[str]  # "" where unknown (a store before issue 19, or a row never hashed)
    usable: np.ndarray  # clean row done and not failed
    views_done: np.ndarray  # every view done (True without views), per sample row
    views: int


def check_same_layout(path: Path, attrs: dict, dataset: Dataset) -> None:
    """An update keeps the dataset's layout: class folders, split folders, a manifest or an
    unlabelled folder read as another is a different dataset (a new folder read as a class, the
    real images' rows deleted), never applied to a store silently."""
    old = str(plain(attrs.get("dataset_layout", "")) or "")
    if old and old != dataset.layout and not _loose_folder_sorted(path, old, dataset):
        hint = (" (to label a folder of loose images, move every one into unlabeled/ or a class folder)"
                if (old, dataset.layout) == ("unlabeled-folder", "class-folders") else "")
        raise StoreError(f"{path}: the dataset at {dataset.root} is read as {dataset.layout} now, the "
                         f"store holds {old}{hint}; featx does not turn one layout into another silently: "
                         "restore the layout, or use --overwrite to re-extract (or --out for a new store)")


def _loose_folder_sorted(path: Path, old: str, dataset: Dataset) -> bool:
    """A folder of loose unlabelled images whose images were all moved into unlabeled/ or class
    folders (the way to start labelling it): every image the store holds is still in the dataset,
    by content, so it is an update. A subfolder made beside loose images that stay would turn
    them into ignored top-level files and delete their rows: still refused."""
    if (old, dataset.layout) != ("unlabeled-folder", "class-folders"):
        return False
    with open_store_file(path) as f:
        if "sha256" not in f["samples"]:  # a store before issue 19: no content to match by
            return False
        stored = {b.decode() for b in f["samples/sha256"][:]}
    return "" not in stored and stored <= {s.sha256 for s in dataset.samples}


def plan_update(path: Path, dataset: Dataset) -> tuple[Dataset, UpdatePlan]:
    """`dataset` with every sample's content hash and its classes' display names (featx.store.names),
    and the plan that turns the store into its store."""
    with open_store_file(path) as f:
        check_same_layout(path, dict(f.attrs), dataset)
        dataset, renamed = with_store_names(dataset, stored_names(f))
    old = _read_old(path)
    dataset = _with_hashes(dataset, old)
    by_sha: dict[str, list[int]] = {}
    for j, sha in enumerate(old.shas):
        if sha:
            by_sha.setdefault(sha, []).append(j)
    old_paths = {p: j for j, p in enumerate(old.paths)}
    source = np.full(len(dataset.samples), -1, dtype=np.int64)
    counts = dict.fromkeys(("new", "changed", "kept", "relabelled", "moved", "copied", "resplit", "retried",
                            "train_new"), 0)
    sha_now = {s.path: s.sha256 for s in dataset.samples}  # what each path holds now
    # Old rows whose path still holds their bytes are those samples; the rest of a content's rows
    # go to its samples at new paths first (of two duplicates, one moved: moved, not copied)
    stayed = {old_paths[s.path] for s in dataset.samples if s.sha256 and old_paths.get(s.path) is not None
              and old.shas[old_paths[s.path]] == s.sha256}
    matched: set[int] = set()  # old rows some sample of the new dataset is
    unlabelled_now: dict[str, int] = {}  # old class -> its images that are unlabelled now
    for i, s in enumerate(dataset.samples):
        same = by_sha.get(s.sha256, []) if s.sha256 else []
        j = next((j for j in same if old.paths[j] == s.path),
                 next((j for j in same if j not in stayed and j not in matched), same[0] if same else -1))
        name = dataset.classes[s.label] if s.label >= 0 else ""
        if j < 0:
            counts["changed" if s.path in old_paths else "new"] += 1
            counts["train_new"] += s.split == "train"
            continue
        counts["relabelled"] += old.labels[j] != name
        if old.labels[j] and not name:
            unlabelled_now[old.labels[j]] = unlabelled_now.get(old.labels[j], 0) + 1
        matched.add(j)
        if old.paths[j] != s.path:  # known bytes at a new path: moved, or copied where the old path keeps them
            counts["copied" if sha_now.get(old.paths[j]) == s.sha256 else "moved"] += 1
        counts["resplit"] += old.splits[j] != s.split
        counts["train_new"] += s.split == "train" and old.splits[j] != "train"
        views_ok = (s.split != "train" or not old.views
                    or (old.splits[j] == "train" and old.paths[j] == s.path and old.views_done[j]))
        if old.usable[j] and views_ok:
            source[i] = j
        elif not old.usable[j]:
            counts["retried"] += 1
    # An old row no new sample is, at a path now gone: a removal (a duplicate's too, whose bytes
    # another path still holds: the store has one row fewer)
    counts["removed"] = sum(1 for j, p in enumerate(old.paths) if j not in matched and p not in sha_now)
    counts["kept"] = int((source >= 0).sum())
    counts["renamed"] = renamed  # classes shown under another name (--class-map)
    notes = _classes_gone(old.classes, dataset, unlabelled_now)
    return dataset, UpdatePlan(source, np.flatnonzero(source < 0), counts, notes)


def _classes_gone(old_classes: list[str], dataset: Dataset, unlabelled_now: dict[str, int]) -> list[str]:
    """A line per class of the store that the dataset has no more while its images are still
    there, unlabelled: a store made before featx read a folder named `unlabeled` as unlabelled
    images had such a class, and its update relabels those rows (no forward) rather than keep it."""
    notes = []
    for c in old_classes:
        if c in dataset.classes or not unlabelled_now.get(c):
            continue
        why = (f" (a folder named {c} holds unlabelled images, not a class; rename the folder to keep "
               "the class)" if is_unlabeled_folder(c) and dataset.layout != "manifest" else "")
        notes.append(f"class '{c}' is gone: its {unlabelled_now[c]:,} image(s) are unlabelled now{why}")
    return notes


def _read_old(path: Path) -> _Old:
    with open_store_file(path) as f:
        classes = list(f["classes"].asstr()[:])
        labels = [classes[y] if y >= 0 else "" for y in f["samples/label"][:]]
        splits = list(f["samples/split"].asstr()[:])
        shas = ([b.decode() for b in f["samples/sha256"][:]] if "sha256" in f["samples"]
                else [""] * len(splits))
        failed = f["failed/reason"][:] != b""
        usable = f["done/clean"][:].astype(bool) & ~failed
        done_aug = f["done/aug"][:].astype(bool)
        views_done = np.ones(len(splits), dtype=bool)
        views_done[f["features/aug_rows"][:]] = done_aug.all(axis=0)
        return _Old(list(f["samples/path"].asstr()[:]), classes, labels, splits,
                    list(zip(f["samples/size"][:].tolist(), f["samples/mtime_ns"][:].tolist())),
                    shas, usable, views_done, int(f.attrs["num_aug_views"]))


def _with_hashes(dataset: Dataset, old: _Old) -> Dataset:
    """Every sample's content hash: its own, else read (a store before issue 19 gets the
    unchanged files' hashes recorded now, as the same bytes)."""
    at = {p: j for j, p in enumerate(old.paths)}
    shas = [s.sha256 for s in dataset.samples]
    # Never the store's hash for the same path, size and mtime: a same-size rewrite with its mtime
    # restored is another image (the listing of store_state hashed them already: a memo hit).
    todo = [i for i, sha in enumerate(shas) if not sha]
    read = hash_files([dataset.abspath(dataset.samples[i]) for i in todo],
                      [(dataset.samples[i].size, dataset.samples[i].mtime_ns) for i in todo])
    for i, sha in zip(todo, read):
        shas[i] = sha
    for i, s in enumerate(dataset.samples):  # first update of an old store: hash what is unchanged
        j = at.get(s.path, -1)
        if j >= 0 and not old.shas[j] and old.stats[j] == (s.size, s.mtime_ns):
            old.shas[j] = shas[i]
    samples = [replace(s, sha256=sha) if s.sha256 != sha else s for s, sha in zip(dataset.samples, shas)]
    return replace(dataset, samples=samples)


# --- assembling the new store --------------------------------------------------------------------

def assemble_update(path: Path, dataset: Dataset, plan: UpdatePlan, delta: Path | None,
                    seconds: float = 0.0) -> dict:
    """Write the store of `dataset` from the old store at `path` (rows `plan.source`) and the
    `delta` store (rows `plan.compute`), then replace `path` atomically. Returns the history entry
    and, as "previous", the version it replaced (the same one after a touch: is_no_op)."""
    with open_store_file(path) as old:
        attrs = {k: plain(v) for k, v in old.attrs.items()}
        entry = _history_entry(attrs, dataset, plan)
        d = open_store_file(delta) if delta is not None else None
        try:
            if d is not None:
                _check_delta(path, attrs, delta, d, plan)
            try:
                atomic_write(path, lambda tmp: _write_new(tmp, dataset, plan, old, d, attrs, entry, seconds))
            except WRITE_ERRORS as exc:
                raise write_error(path, exc, "updating the store") from None
            except StoreError as exc:
                raise StoreError(f"{path}: {exc}") from None
        finally:
            if d is not None:
                d.close()
    return {**entry, "previous": int(attrs.get("store_version", 1))}


def _check_delta(path: Path, attrs: dict, delta: Path, d: h5py.File, plan: UpdatePlan) -> None:
    """The delta's rows were computed exactly as the store's (never a silent mix)."""
    have = {k: plain(v) for k, v in d.attrs.items()}
    keys = [k for k in IDENTITY_KEYS + EXECUTION_KEYS if k != "dataset_fingerprint"]
    found = [f"{k} is {short(have.get(k))} there, {short(attrs.get(k))} in the store"
             for k in keys if have.get(k, "") != attrs.get(k, "")]
    if not have.get("complete"):
        found.append("it is not complete")
    if d["features/clean"].shape[0] != len(plan.compute):
        found.append(f"it has {d['features/clean'].shape[0]} rows, the update needs {len(plan.compute)}")
    if found:
        raise StoreError(f"{delta}: cannot update {path} from it: {'; '.join(found)}")


CHANGES = ("new", "changed", "removed", "relabelled", "moved", "copied", "renamed", "resplit", "retried")


def is_no_op(attrs: dict, dataset: Dataset, plan: UpdatePlan) -> bool:
    """Nothing but file times changed (a `touch`, a restore): the store is rewritten with the new
    listing, but it holds the same data, so it keeps its version (a head stays current)."""
    root = os.path.abspath(str(attrs.get("dataset_root", "")))
    return (not len(plan.compute) and not any(plan.counts.get(k, 0) for k in CHANGES)
            and root == os.path.abspath(dataset.root))


def _history_entry(attrs: dict, dataset: Dataset, plan: UpdatePlan) -> dict:
    keys = ("new", "changed", "removed", "kept", "relabelled", "moved", "copied", "renamed", "resplit", "train_new")
    return {"version": int(attrs.get("store_version", 1)) + (0 if is_no_op(attrs, dataset, plan) else 1),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "featx_version": __version__, "dataset_root": os.path.abspath(dataset.root),
            "samples": len(dataset.samples), "computed": int(len(plan.compute)),
            **{k: int(plan.counts.get(k, 0)) for k in keys}}


def _write_new(tmp: Path, dataset: Dataset, plan: UpdatePlan, old: h5py.File, d: h5py.File | None,
               attrs: dict, entry: dict, seconds: float) -> None:
    cut = attrs.get("cut") or None
    spec = StoreSpec(provenance={"torch_version": attrs.get("torch_version", "")}, feature_dim=int(attrs["feature_dim"]),
                     num_aug_views=int(attrs["num_aug_views"]), dtype=str(attrs["dtype"]), cut=cut,
                     cut_shape=tuple(old[f"cut/{cut}/clean"].shape[1:]) if cut else None)
    write_layout(tmp, dataset, spec)
    with h5py.File(tmp, "r+") as f:
        fresh = {k: f.attrs[k] for k in ("dataset_root", "dataset_name", "dataset_layout",
                                          "dataset_fingerprint")}
        for key, value in old.attrs.items():  # the store's provenance, as it was made
            f.attrs[key] = value
        for key, value in fresh.items():
            f.attrs[key] = value
        _copy_rows(f, dataset, plan, old, d)
        done = f["done/clean"][:].all() and f["done/aug"][:].all()
        f.attrs["num_failed"] = np.int64((f["failed/reason"][:] != b"").sum())
        f.attrs["extract_seconds"] = np.float64(seconds)
        f.attrs["images_per_second"] = np.float64(d.attrs.get("images_per_second", 0.0) if d else 0.0)
        f.attrs["store_version"] = np.int64(entry["version"])
        if not is_no_op(attrs, dataset, plan):
            f.attrs["history"] = json.dumps(history(attrs) + [entry])
        f.attrs["complete"] = np.uint8(bool(done))


def _copy_rows(f: h5py.File, dataset: Dataset, plan: UpdatePlan, old: h5py.File,
               d: h5py.File | None) -> None:
    """Every row-indexed table of the old store, rebuilt for the new rows from its two sources."""
    n_old = old["samples/path"].shape[0]
    delta_row = np.full(len(dataset.samples), -1, dtype=np.int64)
    delta_row[plan.compute] = np.arange(len(plan.compute))
    train_new = np.flatnonzero([s.split == "train" for s in dataset.samples])
    old_rank = _ranks(old["features/aug_rows"][:], n_old)
    delta_rank = _ranks(d["features/aug_rows"][:], len(plan.compute)) if d is not None else None
    k = int(old.attrs["num_aug_views"])

    def visit(name: str, node) -> None:
        if not isinstance(node, h5py.Dataset) or name.startswith("samples/") or name in REBUILT:
            return
        views = name.split("/")[-1] == "aug" and node.ndim >= 2 and node.shape[:2] == (
            k, old["features/aug_rows"].shape[0])
        if not views and (not node.shape or node.shape[0] != n_old):
            return  # not indexed by sample: left as the new layout made it
        if d is not None and name not in d:  # its new rows could not be filled: never half a table
            raise StoreError(f"{name}: a table of the store that this featx does not compute, so its "
                             "new rows cannot be extracted; use --overwrite to re-extract the store")
        if name not in f:  # a table this featx does not lay out itself: same type, new rows
            rows = len(train_new) if views else len(dataset.samples)
            shape = (k, rows, *node.shape[2:]) if views else (rows, *node.shape[1:])
            f.create_dataset(name, shape=shape, dtype=node.dtype, chunks=node.chunks if all(shape) else None)
        if views:
            src_old = np.where(plan.source[train_new] >= 0, old_rank[plan.source[train_new]], -1)
            src_delta = (np.where(delta_row[train_new] >= 0, delta_rank[delta_row[train_new]], -1)
                         if delta_rank is not None else np.full(len(train_new), -1))
            _fill(f[name], node, d[name] if d is not None else None, src_old, src_delta, axis=1)
        else:
            _fill(f[name], node, d[name] if d is not None else None, plan.source, delta_row, axis=0)

    old.visititems(visit)


def _ranks(aug_rows: np.ndarray, n: int) -> np.ndarray:
    """Sample row -> its row in the views tables (-1: not a training sample)."""
    rank = np.full(n + 1, -1, dtype=np.int64)  # index -1 (no source) reads the spare last entry
    rank[aug_rows] = np.arange(len(aug_rows))
    return rank


def _fill(dst: h5py.Dataset, old: h5py.Dataset, delta: h5py.Dataset | None, src_old: np.ndarray,
          src_delta: np.ndarray, axis: int) -> None:
    """dst[..., i] = old[..., src_old[i]] or delta[..., src_delta[i]] along `axis`, in blocks."""
    n = dst.shape[axis]
    row_bytes = max(1, dst.dtype.itemsize * int(np.prod(dst.shape)) // max(1, n))
    step = max(1, min(4096, BLOCK_BYTES // row_bytes))
    for a in range(0, n, step):
        b = min(n, a + step)
        shape = list(dst.shape)
        shape[axis] = b - a
        block = np.zeros(shape, dtype=dst.dtype)
        for source, idx in ((old, src_old[a:b]), (delta, src_delta[a:b])):
            take = np.flatnonzero(idx >= 0)
            if source is None or not len(take):
                continue
            values = _read_rows(source, idx[take], axis)
            if axis == 0:
                block[take] = values
            else:
                block[:, take] = values
        if axis == 0:
            dst[a:b] = block
        else:
            dst[:, a:b] = block


def _read_rows(ds: h5py.Dataset, idx: np.ndarray, axis: int) -> np.ndarray:
    """ds's rows `idx` (any order, repeats allowed) along `axis`: one span read when the rows are
    close together, else the distinct rows in increasing order."""
    unique, inverse = np.unique(idx, return_inverse=True)
    lo, hi = int(unique[0]), int(unique[-1]) + 1
    if hi - lo <= 2 * len(unique) + 64:
        span = ds[lo:hi] if axis == 0 else ds[:, lo:hi]
        rows = span[unique - lo] if axis == 0 else span[:, unique - lo]
    else:
        rows = ds[unique] if axis == 0 else ds[:, unique]
    return rows[inverse] if axis == 0 else rows[:, inverse]
