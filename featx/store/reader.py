"""Reading a store: by split and view for heads, shapes and progress for `featx info`.

    with FeatureStore("stores/elpv_efficientnet_lite0.h5") as st:
        X, y = st.features("train")             # clean view, written and not failed
        Xk, yk = st.features("train", view=2)   # augmented view 2
        block = st.read_clean(rows[:256])       # a few rows, read alone

Readers open without HDF5's file lock: the store's writes never change HDF5 metadata, and
`featx info` must work while an extraction holds the write lock.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import h5py
import numpy as np

from featx.data.records import SPLITS
from featx.errors import StoreError
from featx.runtime.display import html_table, listed
from featx.store.check import check_layout
from featx.store.degenerate import FeatureScan, feature_problem
from featx.store.schema import JSON_ATTRS, os_reason, plain

# Rows are gathered by contiguous reads of at most READ_SPAN rows (about 40 MB at D=1280 fp16);
# a span that would read over SPARSE times the rows it wants becomes an HDF5 selection instead
# (h5py builds a selection row by row: 5x slower per row than a contiguous read and indexing).
READ_SPAN = 16384
SPARSE = 8
MAPS = ("clean", "aug")


def open_h5(path: Path, mode: str = "r") -> h5py.File:
    """Open a store file, turning HDF5's errors into one clear line."""
    path = Path(path)
    if path.is_dir():
        raise StoreError(f"{path}: is a folder, not a store file")
    if not path.is_file():
        raise StoreError(f"{path}: no such store")
    if path.stat().st_size == 0:
        raise StoreError(f"{path}: empty file, not a store (an interrupted copy?); move it aside "
                         "or re-run `featx extract` with --overwrite")
    if path.suffix in (".safetensors", ".json"):
        raise StoreError(f"{path}: this is a trained head (or its sidecar), not a feature store (.h5)")
    try:
        return h5py.File(path, mode, locking=(mode != "r"))
    except OSError as exc:
        what = ("not an HDF5 file" if "signature not found" in str(exc)
                else f"unreadable or corrupt store ({os_reason(exc)})")
        raise StoreError(f"{path}: {what}; move it aside or re-run `featx extract` with "
                         "--overwrite") from None


def open_store_file(path: Path) -> h5py.File:
    """Open a store for reading and check its layout (featx.store.check); no lock is taken."""
    f = open_h5(path)
    try:
        check_layout(f, Path(path))
    except BaseException:
        f.close()
        raise
    return f


def read_attrs(path: Path) -> dict:
    """The store's attributes as plain Python (JSON ones decoded), without reading any table."""
    with open_store_file(path) as f:
        return _decoded(f.attrs)


def count_failed(path: Path) -> int:
    """Samples of the store that could not be read (their reason is recorded)."""
    with open_h5(path) as f:
        return int((f["failed/reason"][:] != b"").sum())


def _decoded(attrs) -> dict:
    out = {}
    for key, value in attrs.items():
        value = plain(value)
        out[key] = json.loads(value) if key in JSON_ATTRS and isinstance(value, str) else value
    return out


@dataclass(frozen=True)
class StoreSummary:
    """Shapes and progress of a store: what `featx info` prints."""

    clean_shape: tuple[int, ...]  # (N, D)
    aug_shape: tuple[int, ...] | None  # (K, N_train, D); None when the store has no views
    done_clean: int  # clean rows written (or failed)
    done_aug: int  # augmented rows written, out of aug_total = K x N_train
    aug_total: int
    cut: str | None  # block whose entering maps are stored (extract --cut)
    cut_shapes: dict[str, tuple[int, ...]]  # "clean" / "aug" -> shape of those maps


class FeatureStore:
    """Read access by split and view, as numpy or torch.

    `f` is the open h5py file, for plain-h5py users; featx itself reads through the methods.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.f = open_store_file(self.path)
        self.classes = list(self.f["classes"].asstr()[:])
        self.class_names = list(self.f["class_names"].asstr()[:])
        self.labels = self.f["samples/label"][:]
        self.splits = _shared_strings(self.f["samples/split"].asstr()[:])
        self.aug_rows = self.f["features/aug_rows"][:]
        reasons = self.f["failed/reason"][:]
        self.failed = {int(i): reasons[i].decode("utf-8", "replace") for i in np.flatnonzero(reasons != b"")}
        self._checked: FeatureScan | None = None  # check_features' one pass over the rows

    @cached_property
    def paths(self) -> np.ndarray:
        """Each sample's path relative to the dataset root, read on first use: a million of them
        hold ~100 MB that training a head never needs."""
        return np.array(self.f["samples/path"].asstr()[:], dtype=object)

    # --- what the store is ----------------------------------------------------------------------

    @property
    def attrs(self) -> dict:
        return _decoded(self.f.attrs)

    @property
    def complete(self) -> bool:
        return bool(self.f.attrs.get("complete", 0))

    @property
    def num_views(self) -> int:
        return int(self.f.attrs["num_aug_views"])

    @property
    def feature_dim(self) -> int:
        return int(self.f["features/clean"].shape[1])

    def require_complete(self) -> None:
        """Raise StoreError unless every row is written (heads, audits and exports read only
        finished stores; an unfinished one resumes with the command that started it)."""
        if not self.complete:
            raise StoreError(f"{self.path}: the store is incomplete; finish it with the same "
                             "`featx extract` command first")

    @property
    def pool(self) -> str | None:
        """The block whose pooled entering maps follow the final features (extract --pool), or None."""
        return str(self.f.attrs.get("pool", "")) or None

    @property
    def final_dim(self) -> int:
        """Columns of the backbone's final features: the first ones; pooled maps follow."""
        return self.feature_dim - int(self.f.attrs.get("pool_dim", 0))

    @property
    def cut(self) -> str | None:
        """The block whose entering maps the store holds, or None."""
        return str(self.f.attrs.get("cut", "")) or None

    def summary(self) -> StoreSummary:
        done_aug = self.f["done/aug"][:]
        aug = self.f["features"].get("aug")
        return StoreSummary(
            clean_shape=tuple(self.f["features/clean"].shape),
            aug_shape=tuple(aug.shape) if aug is not None else None,
            done_clean=int(self.f["done/clean"][:].sum()), done_aug=int(done_aug.sum()),
            aug_total=int(done_aug.size), cut=self.cut,
            cut_shapes={name: tuple(ds.shape) for name, ds in self._maps(self.cut).items()})

    # --- rows and features ----------------------------------------------------------------------

    def rows(self, split: str | None = None) -> np.ndarray:
        """Sample indices of `split` (all if None) that are written and did not fail."""
        ok = self.f["done/clean"][:].astype(bool)
        ok[list(self.failed)] = False
        if split is not None:
            ok &= self.splits == split
        return np.flatnonzero(ok)

    def features(self, split: str | None = None, view: str | int = "clean",
                 dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
        """(X [n, D], y [n]) for the written, non-failed samples of `split`.

        view: "clean", or k in [0, num_aug_views) for augmented view k of training samples.
        """
        if split is not None and split not in SPLITS:
            raise StoreError(f"{self.path}: no split {split!r}; use one of {', '.join(SPLITS)} "
                             "(or None for every sample)")
        if view == "clean":
            rows = self.rows(split)
            return self._usable(self.read_clean(rows, dtype)), self.labels[rows]
        k = self._check_view(int(view))
        done = self.f["done/aug"][k].astype(bool)
        sample = self.aug_rows
        keep = done & ~np.isin(sample, list(self.failed))
        if split is not None:
            keep &= self.splits[sample] == split
        return self._usable(self.read_aug(k, dtype=dtype)[keep]), self.labels[sample[keep]]

    def _usable(self, x: np.ndarray) -> np.ndarray:
        """`x`, or StoreError naming why no command can use these features (degenerate.py)."""
        problem = feature_problem(x, cosine=False)
        if problem:
            raise StoreError(f"{self.path}: the features are degenerate: {problem}")
        return x

    def check_features(self, cosine: bool = True) -> None:
        """StoreError when the store's usable clean features are degenerate (featx.store.degenerate;
        `cosine`: zero rows too, for audit and search): one pass over the rows, once per open store;
        audit, search and train-head call it before their work."""
        if self._checked is not None:
            problem = self._checked.problem(cosine)
            if problem:
                raise StoreError(f"{self.path}: the features are degenerate: {problem}")
            return
        scan, rows = FeatureScan(), self.rows()
        for a in range(0, len(rows), READ_SPAN):
            part = rows[a:a + READ_SPAN]
            scan.add(self.read_span(int(part[0]), int(part[-1]) + 1)[part - part[0]])
        self._checked = scan
        self.check_features(cosine)

    def read_clean(self, rows: np.ndarray | None = None, dtype=np.float32) -> np.ndarray:
        """Clean features [len(rows), D] of sample `rows` (any order, repeats allowed; None = all),
        gathered span by span (_gathered): memory holds the result and one span, never the whole
        dataset. A row outside the store is a StoreError naming it."""
        data = self.f["features/clean"]
        rows = np.arange(len(data)) if rows is None else self._rows(rows, len(data))
        out = np.empty((len(rows), data.shape[1]), dtype)
        for positions, values in _gathered(data, rows):
            out[positions] = values
        return out

    def paths_of(self, rows: np.ndarray) -> list[str]:
        """The paths of sample `rows`, read span by span (not the whole table: a million paths
        are ~100 MB) unless `paths` has been read already."""
        rows = self._rows(rows, len(self.f["samples/path"]))
        if "paths" in self.__dict__:
            return [self.paths[r] for r in rows]
        out = np.empty(len(rows), dtype=object)
        for positions, values in _gathered(self.f["samples/path"].asstr(), rows):
            out[positions] = values
        return out.tolist()

    def _rows(self, rows, n: int) -> np.ndarray:
        """`rows` as int64; StoreError naming those outside [0, n), not numpy's IndexError of a span."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        bad = rows[(rows < 0) | (rows >= n)]
        if len(bad):
            raise StoreError(f"{self.path}: row{'s' * (len(bad) > 1)} {', '.join(map(str, bad[:5]))} out of "
                             f"range: the store has {n} rows (0 to {n - 1})")
        return rows

    def read_span(self, start: int, stop: int, dtype=np.float32) -> np.ndarray:
        """Clean features of sample rows [start, stop): one contiguous read (streaming blocks)."""
        return self.f["features/clean"][start:stop].astype(dtype)

    def content_hashes(self) -> list[str] | None:
        """Each sample's sha256 (hex) of its file's bytes; None in stores made before they were kept."""
        if "samples/sha256" not in self.f:
            return None
        return [h.decode("ascii", "replace") for h in self.f["samples/sha256"][:]]

    def sample_files(self, rows: np.ndarray | None = None) -> "SampleFiles":
        """Where the files of sample `rows` (None: all) are, each checked before use (SampleFiles)."""
        rows = np.arange(len(self.labels)) if rows is None else np.asarray(rows, dtype=np.int64)
        shas = self.content_hashes()
        paths = self.paths_of(rows)
        known = [shas[r] for r in rows] if shas is not None else [""] * len(paths)
        from featx.store.files import SampleFiles

        return SampleFiles(str(plain(self.f.attrs.get("dataset_root", ""))), dict(zip(paths, known)))

    def read_aug(self, view: int | None = None, ranks: np.ndarray | None = None,
                 dtype=np.float32) -> np.ndarray:
        """Augmented features by rank in features/aug (= training samples in sample order).

        view: k for [n, D] of view k, None for every view [K, n, D]. ranks: None = all; for one
        view, increasing ranks are read as the one span ranks[0]..ranks[-1] (one chunk row read).
        """
        data = self.f["features"].get("aug")
        if data is None:
            raise StoreError(f"{self.path}: the store has no augmented views (extract --views K)")
        if view is None:
            block = data[()] if ranks is None else data[()][:, ranks]
            return block.astype(dtype)
        k = self._check_view(view)
        if ranks is None:
            return data[k].astype(dtype)
        ranks = np.asarray(ranks, dtype=np.int64)
        if not len(ranks):
            return data[k, :0].astype(dtype)
        if (np.diff(ranks) > 0).all():  # increasing: one span read
            return data[k, ranks[0]:ranks[-1] + 1][ranks - ranks[0]].astype(dtype)
        return data[k][()][ranks].astype(dtype)  # any order: the view, then the rows

    def torch(self, split: str | None = None, view: str | int = "clean"):
        import torch

        x, y = self.features(split, view)
        return torch.from_numpy(x), torch.from_numpy(y)

    # --- cut maps (extract --cut) ----------------------------------------------------------------

    def has_cut(self, cut: str) -> bool:
        """Does the store hold the maps entering block `cut`?"""
        return self.cut == cut and f"cut/{cut}" in self.f

    def cut_maps(self, cut: str, which: str = "clean") -> np.ndarray | None:
        """All stored maps entering `cut` (float16): "clean" [N, C, H, W] or "aug" [K, N_train, C,
        H, W]; None when the store has no such maps (no views: no "aug")."""
        if which not in MAPS:
            raise StoreError(f"cut maps are clean or aug, got {which!r}")
        data = self._maps(cut).get(which)
        return data[()] if data is not None else None

    def cut_nbytes(self, cut: str) -> int:
        """Bytes the maps entering `cut` take in memory (clean and views)."""
        return sum(int(ds.nbytes) for ds in self._maps(cut).values())

    def _maps(self, cut: str | None) -> dict[str, h5py.Dataset]:
        group = self.f.get(f"cut/{cut}") if cut else None
        return {name: group[name] for name in MAPS if name in group} if group is not None else {}

    def _check_view(self, k: int) -> int:
        if not 0 <= k < self.num_views:
            raise StoreError(f"{self.path}: view {k} does not exist (store has {self.num_views} views)")
        return k

    def __repr__(self) -> str:
        if not self.f.id.valid:
            return f"FeatureStore({self.path}, closed)"
        attrs = self.f.attrs
        lines = [f"FeatureStore({self.path.name}: {len(self.labels)} images x {self.feature_dim} "
                 f"features, {plain(attrs.get('backbone', '?'))}; "
                 + ("complete)" if self.complete else f"incomplete, {len(self.rows())} written)"),
                 f"  classes: {listed(self.class_names)}",
                 "  splits: " + ", ".join(f"{s} {n}" for s, n in self._split_counts())
                 + (f"; {self.num_views} augmented views" if self.num_views else "")
                 + (f"; {len(self.failed)} failed" if self.failed else "")]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        if not self.f.id.valid:
            return html_table([("path", str(self.path)), ("state", "closed")], caption="featx store")
        rows = [("path", str(self.path)), ("backbone", plain(self.f.attrs.get("backbone", "?"))),
                ("images", len(self.labels)), ("features", self.feature_dim),
                ("pooled columns", f"{self.feature_dim - self.final_dim} ({self.pool})" if self.pool else "-"),
                ("augmented views", self.num_views), ("complete", "yes" if self.complete else "no"),
                ("failed", len(self.failed)), ("classes", f"{len(self.classes)}: {listed(self.class_names)}")]
        splits = html_table(self._split_counts(), header=["split", "images"])
        return html_table(rows, caption=f"featx store: {self.path.name}") + splits

    def _split_counts(self) -> list[tuple[str, int]]:
        names, counts = np.unique(self.splits.astype(str), return_counts=True)
        return [(str(s), int(n)) for s, n in zip(names, counts)]

    def close(self) -> None:
        self.f.close()

    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _shared_strings(values: np.ndarray) -> np.ndarray:
    """An object array whose equal strings are one object (a split name per row: 8 bytes a row,
    not a ~60-byte string each)."""
    seen: dict[str, str] = {}
    return np.array([seen.setdefault(v, v) for v in values], dtype=object)


def _gathered(table, rows: np.ndarray):
    """(positions in `rows`, their values) of `table`'s sample `rows` (any order, repeats
    allowed), one read per span: from the first row still wanted, contiguous up to its last
    wanted row within READ_SPAN rows, or an HDF5 selection of just the wanted rows where that
    read would hold over SPARSE times more rows than it wants."""
    order = np.argsort(rows, kind="stable")
    ordered = rows[order]
    lo = 0
    while lo < len(ordered):
        first = int(ordered[lo])
        hi = int(np.searchsorted(ordered, first + READ_SPAN))
        last = int(ordered[hi - 1])
        wanted = ordered[lo:hi]
        if last - first + 1 > SPARSE * (hi - lo):
            unique, inverse = np.unique(wanted, return_inverse=True)
            yield order[lo:hi], table[unique][inverse]
        else:
            yield order[lo:hi], table[first:last + 1][wanted - first]
        lo = hi
