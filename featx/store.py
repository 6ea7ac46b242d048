"""The HDF5 feature store (DESIGN.md): create, validate, resume, write batches, read by split/view.

Layout of one store (readable with plain h5py):

    attrs: format_version, featx_version, backbone, weights (JSON), feature_dim, input_size,
           transform (JSON), num_aug_views, seed, dataset_root, dataset_fingerprint, created,
           torch_version, device, dtype, engine, batch_size, complete, extract_seconds, ...
    classes, class_names           [C] str
    samples/path, label, split     [N]   (path relative to dataset_root; label -1 = unlabeled)
    samples/size, samples/mtime_ns [N]   (what the fingerprint saw, to explain a mismatch)
    features/clean                 [N, D]        float16 by default
    features/aug                   [K, N_train, D]  view k of training sample features/aug_rows[j]
    features/aug_rows              [N_train]     sample index of each augmented row
    done/clean [N], done/aug [K, N_train]        uint8, 1 = row written (or failed)
    failed/reason                  [N] bytes     UTF-8 reason, empty = ok

Why it survives SIGKILL at any moment (RELIABILITY.md 1-3): the file is built complete in a temp
file and renamed into place; every dataset is fixed-size, uncompressed, with chunks allocated at
creation, so later writes touch only raw bytes, never HDF5 metadata. A batch commits as: write
rows, flush, mark done, flush. A kill loses at most the batch in flight, and resume recomputes it.
Only one writer at a time (a lock file); readers open without HDF5 locking so `featx info` works
during an extraction.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from featx import __version__
from featx.data import Dataset
from featx.errors import StoreError

FORMAT_VERSION = 1
REASON_BYTES = 256
# Provenance that must match for a store to be resumed or reused; anything else is informative.
IDENTITY_KEYS = ("backbone", "weights_sha256", "feature_dim", "input_size", "transform",
                 "num_aug_views", "seed", "dataset_fingerprint", "dtype", "cut")
# How the numbers were computed: a resumed run must match them (CPU and GPU, torch and ONNX
# Runtime, bf16 and fp32 agree only to rounding), but a complete store stays usable anywhere.
EXECUTION_KEYS = ("device", "engine", "decode", "amp")
JSON_ATTRS = ("weights", "transform")


@dataclass(frozen=True)
class StoreSpec:
    """Everything needed to create a store, and to check that an existing one is the same."""

    provenance: dict  # attrs: backbone, weights, weights_sha256, transform, seed, engine, ...
    feature_dim: int
    num_aug_views: int
    dtype: str = "float16"
    cut: str | None = None  # also store the activation maps entering this block (float16)
    cut_shape: tuple[int, ...] | None = None  # (C, H, W) of those maps


# --- locking -------------------------------------------------------------------------------

class StoreLock:
    """An exclusive, non-blocking lock on `<store>.lock`, released by the kernel if we die."""

    def __init__(self, store: Path):
        self.path = Path(str(store) + ".lock")
        self.fd: int | None = None

    def acquire(self) -> "StoreLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                raise StoreError(f"{self.path.with_suffix('')}: already being written by {holder}; "
                                 "wait for it to finish (one writer per store)") from None
            raise StoreError(f"{self.path}: this file system does not support file locks "
                             f"({exc.strerror}); featx will not write a store without one "
                             "(NFS without lockd?): use a local disk") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock; the file stays (harmless, reused)
            self.fd = None

    def __enter__(self) -> "StoreLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# --- creating and validating -----------------------------------------------------------------

def prepare_store(path: Path, dataset: Dataset, spec: StoreSpec, overwrite: bool = False) -> str:
    """Create the store, or check an existing one matches `spec`. Call with the lock held.

    Returns "created", "resumed" or "complete".
    """
    _remove_stale_temp_files(path)
    if path.exists() and overwrite:
        path.unlink()
    if path.exists():
        with open_h5(path) as f:
            complete = bool(f.attrs.get("complete", False))
            differences = _differences(dict(f.attrs), spec, f, dataset, resuming=not complete)
        if differences:
            raise StoreError(f"{path} was made with other settings: {'; '.join(differences)}. "
                             "Use --overwrite to replace it, or --out to write elsewhere")
        return "complete" if complete else "resumed"
    _create(path, dataset, spec)
    return "created"


def _create(path: Path, dataset: Dataset, spec: StoreSpec) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    samples = dataset.samples
    n, d, k = len(samples), spec.feature_dim, spec.num_aug_views
    train_rows = np.array([i for i, s in enumerate(samples) if s.split == "train"], dtype=np.int64)
    try:
        with h5py.File(tmp, "w") as f:
            _write_attrs(f, dataset, spec)
            str_dt = h5py.string_dtype("utf-8")
            f.create_dataset("classes", data=np.array(dataset.classes, dtype=object), dtype=str_dt)
            f.create_dataset("class_names", data=np.array(dataset.display_names, dtype=object), dtype=str_dt)
            g = f.create_group("samples")
            g.create_dataset("path", data=np.array([s.path for s in samples], dtype=object), dtype=str_dt)
            g.create_dataset("label", data=np.array([s.label for s in samples], dtype=np.int64))
            g.create_dataset("split", data=np.array([s.split for s in samples], dtype=object), dtype=str_dt)
            g.create_dataset("size", data=np.array([s.size for s in samples], dtype=np.int64))
            g.create_dataset("mtime_ns", data=np.array([s.mtime_ns for s in samples], dtype=np.int64))
            feats = f.create_group("features")
            _fixed(feats, "clean", (n, d), spec.dtype, chunks=(min(n, 256), d))
            feats.create_dataset("aug_rows", data=train_rows)
            if k:
                _fixed(feats, "aug", (k, len(train_rows), d), spec.dtype,
                       chunks=(1, max(1, min(len(train_rows), 256)), d))
            if spec.cut:  # one chunk per image: training reads maps in shuffled order
                maps = f.create_group(f"cut/{spec.cut}")
                _fixed(maps, "clean", (n, *spec.cut_shape), "float16", chunks=(1, *spec.cut_shape))
                if k:
                    _fixed(maps, "aug", (k, len(train_rows), *spec.cut_shape), "float16",
                           chunks=(1, 1, *spec.cut_shape))
            done = f.create_group("done")
            _fixed(done, "clean", (n,), "uint8")
            _fixed(done, "aug", (k, len(train_rows)), "uint8")
            _fixed(f.create_group("failed"), "reason", (n,), f"S{REASON_BYTES}")
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"{path}: cannot create store ({_os_reason(exc)})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fixed(group: h5py.Group, name: str, shape: tuple, dtype: str, chunks=None) -> None:
    """A fixed-size dataset with all its storage allocated now (no metadata changes later)."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    if 0 in shape:
        chunks = None
    group.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks, dcpl=dcpl)


def _write_attrs(f: h5py.File, dataset: Dataset, spec: StoreSpec) -> None:
    import torch

    attrs = {
        "format_version": FORMAT_VERSION, "featx_version": __version__, "cut": spec.cut or "",
        "feature_dim": spec.feature_dim, "num_aug_views": spec.num_aug_views, "dtype": spec.dtype,
        "dataset_root": str(dataset.root), "dataset_name": dataset.name,
        "dataset_layout": dataset.layout, "dataset_fingerprint": dataset.fingerprint,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__, "h5py_version": h5py.__version__,
        **spec.provenance,
    }
    for key, value in attrs.items():
        if key in JSON_ATTRS:
            value = json.dumps(value, sort_keys=True)
        elif isinstance(value, str):
            value = str(value)  # str subclasses (torch.__version__) have no HDF5 type
        f.attrs[key] = value
    # Pre-created so that finishing only overwrites them in place (attrs.modify).
    f.attrs["complete"] = np.uint8(0)
    f.attrs["extract_seconds"] = np.float64(0)
    f.attrs["images_per_second"] = np.float64(0)
    f.attrs["num_failed"] = np.int64(0)


def _differences(attrs: dict, spec: StoreSpec, f: h5py.File, dataset: Dataset,
                 resuming: bool) -> list[str]:
    if attrs.get("format_version") != FORMAT_VERSION:
        return [f"store format {attrs.get('format_version')} (this featx writes {FORMAT_VERSION})"]
    wanted = {"feature_dim": spec.feature_dim, "num_aug_views": spec.num_aug_views,
              "dtype": spec.dtype, "cut": spec.cut or "", **spec.provenance}
    out = []
    for key in IDENTITY_KEYS + (EXECUTION_KEYS if resuming else ()):
        have, want = attrs.get(key, "" if key == "cut" else None), wanted.get(key)
        if key in JSON_ATTRS and isinstance(have, str):
            have, want = json.loads(have), json.loads(json.dumps(want, sort_keys=True))
        if key == "dataset_fingerprint":
            continue  # explained below, in terms of files
        if _plain(have) != _plain(want):
            out.append(f"{key} is {_short(have)} in the store, {_short(want)} requested")
    if attrs.get("dataset_fingerprint") != dataset.fingerprint:
        out.append(_dataset_changes(f, dataset))
    return out


def _dataset_changes(f: h5py.File, dataset: Dataset) -> str:
    stored = {p: (s, m) for p, s, m in zip(
        f["samples/path"].asstr()[:], f["samples/size"][:], f["samples/mtime_ns"][:])}
    current = {s.path: (s.size, s.mtime_ns) for s in dataset.samples}
    added = sorted(set(current) - set(stored))
    removed = sorted(set(stored) - set(current))
    changed = sorted(p for p in set(current) & set(stored) if tuple(current[p]) != tuple(stored[p]))
    parts = [f"{len(v)} {what} (e.g. {v[0]})" for what, v in
             (("added", added), ("removed", removed), ("changed", changed)) if v]
    return "the dataset changed: " + (", ".join(parts) or "labels, splits or classes differ")


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _short(value) -> str:
    text = json.dumps(_plain(value), sort_keys=True, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."


def _remove_stale_temp_files(path: Path) -> None:
    for tmp in path.parent.glob(f"{path.name}.tmp-*"):
        tmp.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _os_reason(exc: OSError) -> str:
    if getattr(exc, "errno", None) == errno.ENOSPC or "No space" in str(exc):
        return "disk full"
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def open_h5(path: Path, mode: str = "r") -> h5py.File:
    """Open a store file, turning HDF5's errors into one clear line."""
    if not Path(path).is_file():
        raise StoreError(f"{path}: no such store")
    try:
        # Readers skip HDF5's file lock: our writes never change metadata, and `featx info`
        # must work while an extraction holds the write lock.
        return h5py.File(path, mode, locking=(mode != "r"))
    except OSError as exc:
        raise StoreError(f"{path}: unreadable or corrupt store ({_os_reason(exc)}); move it aside "
                         "or re-run with --overwrite") from None


# --- writing ---------------------------------------------------------------------------------

class StoreWriter:
    """Writes batches of rows into a prepared store; the caller holds the StoreLock."""

    def __init__(self, path: Path):
        self.path = path
        self.f = open_h5(path, "r+")
        self.clean = self.f["features/clean"]
        self.aug = self.f["features/aug"] if "aug" in self.f["features"] else None
        cut = self.f.attrs.get("cut", "")
        self.maps = self.f[f"cut/{cut}"] if cut else None

    def write_batch(self, start: int, stop: int, clean: np.ndarray, train_start: int,
                    aug: np.ndarray | None, failed: dict[int, str],
                    maps: tuple[np.ndarray, np.ndarray | None] | None = None) -> None:
        """Rows [start, stop) of clean features, training rows [train_start, ...) of views,
        and the same rows of the cut maps (clean, aug) when the store has a cut."""
        try:
            self.clean[start:stop] = clean
            if aug is not None and aug.shape[1]:
                self.aug[:, train_start:train_start + aug.shape[1]] = aug
            if maps is not None:
                self.maps["clean"][start:stop] = maps[0]
                if maps[1] is not None and maps[1].shape[1]:
                    self.maps["aug"][:, train_start:train_start + maps[1].shape[1]] = maps[1]
            for row, reason in failed.items():
                self.f["failed/reason"][row] = reason.encode("utf-8")[:REASON_BYTES]
            self.f.flush()  # rows reach the file before they are marked done
            self.f["done/clean"][start:stop] = 1
            if aug is not None and aug.shape[1]:
                self.f["done/aug"][:, train_start:train_start + aug.shape[1]] = 1
            self.f.flush()
        except OSError as exc:
            raise StoreError(f"{self.path}: write failed ({_os_reason(exc)}); rows written so far "
                             "are kept: fix the cause and re-run the same command to resume") from None

    def finish(self, seconds: float, images_per_second: float) -> None:
        done = self.f["done/clean"][:].all() and self.f["done/aug"][:].all()
        failed = int((self.f["failed/reason"][:] != b"").sum())
        self.f.attrs.modify("extract_seconds", np.float64(seconds))
        self.f.attrs.modify("images_per_second", np.float64(images_per_second))
        self.f.attrs.modify("num_failed", np.int64(failed))
        self.f.flush()
        if done:  # only a store whose every row is written is ever marked complete
            self.f.attrs.modify("complete", np.uint8(1))
            self.f.flush()

    def close(self) -> None:
        self.f.close()


def read_done(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open_h5(path) as f:
        return f["done/clean"][:].astype(bool), f["done/aug"][:].astype(bool)


# --- reading ---------------------------------------------------------------------------------

class FeatureStore:
    """Read access by split and view, as numpy or torch.

        with FeatureStore("stores/elpv_efficientnet_lite0.h5") as st:
            X, y = st.features("train")             # clean view
            Xk, yk = st.features("train", view=2)   # augmented view 2
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.f = open_h5(self.path)
        missing = [k for k in ("samples/path", "features/clean", "done/clean", "failed/reason")
                   if k not in self.f]
        if missing:
            self.f.close()
            raise StoreError(f"{self.path}: not a featx feature store (missing {', '.join(missing)})")
        self.classes = list(self.f["classes"].asstr()[:])
        self.class_names = list(self.f["class_names"].asstr()[:])
        self.paths = np.array(self.f["samples/path"].asstr()[:], dtype=object)
        self.labels = self.f["samples/label"][:]
        self.splits = np.array(self.f["samples/split"].asstr()[:], dtype=object)
        self.aug_rows = self.f["features/aug_rows"][:]
        reasons = self.f["failed/reason"][:]
        self.failed = {int(i): reasons[i].decode("utf-8", "replace") for i in np.flatnonzero(reasons != b"")}

    @property
    def attrs(self) -> dict:
        out = {}
        for key, value in self.f.attrs.items():
            value = _plain(value)
            out[key] = json.loads(value) if key in JSON_ATTRS and isinstance(value, str) else value
        return out

    @property
    def complete(self) -> bool:
        return bool(self.f.attrs.get("complete", 0))

    @property
    def num_views(self) -> int:
        return int(self.f.attrs["num_aug_views"])

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
        if view == "clean":
            rows = self.rows(split)
            return self.f["features/clean"][:][rows].astype(dtype), self.labels[rows]
        k = int(view)
        if not 0 <= k < self.num_views:
            raise StoreError(f"{self.path}: view {k} does not exist (store has {self.num_views} views)")
        done = self.f["done/aug"][k].astype(bool)
        sample = self.aug_rows
        keep = done & ~np.isin(sample, list(self.failed))
        if split is not None:
            keep &= self.splits[sample] == split
        return self.f["features/aug"][k][keep].astype(dtype), self.labels[sample[keep]]

    def torch(self, split: str | None = None, view: str | int = "clean"):
        import torch

        x, y = self.features(split, view)
        return torch.from_numpy(x), torch.from_numpy(y)

    def close(self) -> None:
        self.f.close()

    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
