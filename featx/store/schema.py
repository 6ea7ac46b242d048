"""What a store is: its format, the keys that identify it, and how a new file is laid out.

Layout of one store (readable with plain h5py):

    attrs: format_version, featx_version, backbone, weights (JSON), feature_dim, input_size,
           transform (JSON), num_aug_views, seed, dataset_root, dataset_fingerprint, created,
           torch_version, device, dtype, engine, batch_size, complete, extract_seconds,
           store_version, history (JSON list: one entry per version, featx.store.update), ...
    classes, class_names           [C] str
    samples/path, label, split     [N]   (path relative to dataset_root; label -1 = unlabeled)
    samples/size, samples/mtime_ns [N]   (what the fingerprint saw, to explain a mismatch)
    samples/sha256                 [N]   content hash (S64 hex; absent in stores before issue 19)
    features/clean                 [N, D]        float16 by default
    features/aug                   [K, N_train, D]  view k of training sample features/aug_rows[j]
    features/aug_rows              [N_train]     sample index of each augmented row
    cut/NAME/clean, cut/NAME/aug   [N, C, H, W], [K, N_train, C, H, W]  float16 (with --cut)
    done/clean [N], done/aug [K, N_train]        uint8, 1 = row written (or failed)
    failed/reason                  [N] bytes     UTF-8 reason, empty = ok

The file is built complete in a temporary file and renamed into place (featx.runtime.atomic); every
dataset is fixed-size, uncompressed, with its chunks allocated at creation, so later writes touch
only raw bytes, never HDF5 metadata (what a SIGKILL mid-write could corrupt).
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from featx.version import __version__
from featx.runtime.atomic import atomic_write
from featx.data import Dataset
from featx.errors import StoreError

FORMAT_VERSION = 1
REASON_BYTES = 256
# Provenance that must match for a store to be resumed or reused; anything else is informative.
IDENTITY_KEYS = ("backbone", "weights_sha256", "feature_dim", "input_size", "transform",
                 "num_aug_views", "seed", "dataset_fingerprint", "dtype", "cut", "pool", "tta")
# How the numbers were computed: a resumed run must match them (CPU and GPU, torch and ONNX
# Runtime, bf16 and fp32 agree only to rounding), but a complete store stays usable anywhere.
EXECUTION_KEYS = ("device", "engine", "decode", "amp")
# Attributes holding a dict, stored as JSON text (HDF5 attributes have no mapping type).
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


# --- creating ----------------------------------------------------------------------------------

def create_store(path: Path, dataset: Dataset, spec: StoreSpec) -> None:
    """Write the whole empty store at `path` atomically: a kill leaves no file or a valid one."""
    try:
        atomic_write(path, lambda tmp: write_layout(tmp, dataset, spec))
    except WRITE_ERRORS as exc:
        raise write_error(path, exc, "creating the store") from None


def write_layout(tmp: Path, dataset: Dataset, spec: StoreSpec) -> None:
    """The empty store of `dataset` at `tmp`: attributes, sample tables, every table allocated."""
    samples = dataset.samples
    n, d, k = len(samples), spec.feature_dim, spec.num_aug_views
    train_rows = np.array([i for i, s in enumerate(samples) if s.split == "train"], dtype=np.int64)
    n_train = len(train_rows)
    with h5py.File(tmp, "w") as f:
        _write_attrs(f, dataset, spec)
        _write_samples(f, dataset)
        feats = f.create_group("features")
        fixed_dataset(feats, "clean", (n, d), spec.dtype, chunks=(min(n, 256), d))
        feats.create_dataset("aug_rows", data=train_rows)
        if k:
            fixed_dataset(feats, "aug", (k, n_train, d), spec.dtype, chunks=(1, max(1, min(n_train, 256)), d))
        if spec.cut:  # one chunk per image: training reads maps in shuffled order
            maps = f.create_group(f"cut/{spec.cut}")
            fixed_dataset(maps, "clean", (n, *spec.cut_shape), "float16", chunks=(1, *spec.cut_shape))
            if k:
                fixed_dataset(maps, "aug", (k, n_train, *spec.cut_shape), "float16",
                       chunks=(1, 1, *spec.cut_shape))
        done = f.create_group("done")
        fixed_dataset(done, "clean", (n,), "uint8")
        fixed_dataset(done, "aug", (k, n_train), "uint8")
        fixed_dataset(f.create_group("failed"), "reason", (n,), f"S{REASON_BYTES}")


def planned_bytes(dataset: Dataset, spec: StoreSpec) -> int:
    """Bytes the store of `dataset` will take on disk: write_layout allocates all of it at once."""
    n = len(dataset.samples)
    t = sum(1 for s in dataset.samples if s.split == "train")
    k, d = spec.num_aug_views, spec.feature_dim
    item = np.dtype(spec.dtype).itemsize
    total = (n + k * t) * d * item  # features/clean, features/aug
    if spec.cut:
        total += (n + k * t) * int(np.prod(spec.cut_shape)) * 2  # float16 maps
    total += n + k * t + n * REASON_BYTES + 8 * t  # done masks, failed/reason, aug_rows
    total += sum(len(s.path.encode()) + 128 for s in dataset.samples)  # sample tables
    return total + 2**20  # HDF5 headers and attributes


def _write_samples(f: h5py.File, dataset: Dataset) -> None:
    samples, text = dataset.samples, h5py.string_dtype("utf-8")
    f.create_dataset("classes", data=np.array(dataset.classes, dtype=object), dtype=text)
    f.create_dataset("class_names", data=np.array(dataset.display_names, dtype=object), dtype=text)
    g = f.create_group("samples")
    g.create_dataset("path", data=np.array([s.path for s in samples], dtype=object), dtype=text)
    g.create_dataset("label", data=np.array([s.label for s in samples], dtype=np.int64))
    g.create_dataset("split", data=np.array([s.split for s in samples], dtype=object), dtype=text)
    g.create_dataset("size", data=np.array([s.size for s in samples], dtype=np.int64))
    g.create_dataset("mtime_ns", data=np.array([s.mtime_ns for s in samples], dtype=np.int64))
    g.create_dataset("sha256", data=np.array([s.sha256.encode() for s in samples], dtype="S64"))


def _torch_version() -> str:
    """A new store's torch (imported here only when asked: an update keeps the store's own, and
    one that computes no row runs without torch, featx.extraction.noop)."""
    import torch

    return torch.__version__


def fixed_dataset(group: h5py.Group, name: str, shape: tuple, dtype, chunks=None) -> None:
    """A fixed-size dataset with all its storage allocated now (no metadata changes later)."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    if 0 in shape:
        chunks = None
    group.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks, dcpl=dcpl)


def _write_attrs(f: h5py.File, dataset: Dataset, spec: StoreSpec) -> None:
    attrs = {
        "format_version": FORMAT_VERSION, "featx_version": __version__, "cut": spec.cut or "",
        "feature_dim": spec.feature_dim, "num_aug_views": spec.num_aug_views, "dtype": spec.dtype,
        # absolute: a store read from another working folder must not find another dataset's files
        "dataset_root": os.path.abspath(dataset.root), "dataset_name": dataset.name,
        "dataset_layout": dataset.layout, "dataset_fingerprint": dataset.fingerprint,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "torch_version": spec.provenance.get("torch_version") or _torch_version(), "h5py_version": h5py.__version__,
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
    f.attrs["store_version"] = np.int64(1)
    f.attrs["history"] = json.dumps([{"version": 1, "date": attrs["created"], "featx_version": __version__,
                                      "dataset_root": attrs["dataset_root"], "samples": len(dataset.samples)}])


# --- comparing ---------------------------------------------------------------------------------

def differences(attrs: dict, spec: StoreSpec, f: h5py.File, dataset: Dataset,
                resuming: bool, with_dataset: bool = True) -> list[str]:
    """One phrase per key where the store at `f` differs from `spec` and `dataset` (empty: same).

    Execution keys count only when `resuming`: a complete store is reusable on any engine. An
    update computes new rows beside old ones, so it compares them too (`resuming`), and leaves
    the dataset out (`with_dataset=False`).
    """
    if attrs.get("format_version") != FORMAT_VERSION:
        return [f"store format {attrs.get('format_version')} (this featx writes {FORMAT_VERSION})"]
    wanted = {"feature_dim": spec.feature_dim, "num_aug_views": spec.num_aug_views,
              "dtype": spec.dtype, "cut": spec.cut or "", "pool": "", "tta": "", **spec.provenance}
    out = []
    for key in IDENTITY_KEYS + (EXECUTION_KEYS if resuming else ()):
        if key == "dataset_fingerprint":
            continue  # explained below, in terms of files
        have, want = attrs.get(key, "" if key in ("cut", "pool", "tta") else None), wanted.get(key)
        if key in JSON_ATTRS and isinstance(have, str):
            have, want = json.loads(have), json.loads(json.dumps(want, sort_keys=True))
        if plain(have) != plain(want):
            out.append(f"{key} is {short(have)} in the store, {short(want)} requested")
    if with_dataset and attrs.get("dataset_fingerprint") != dataset.fingerprint:
        out.append(dataset_changes(f, dataset))
    return out


def dataset_changes(f: h5py.File, dataset: Dataset) -> str:
    """The fingerprint differs: say which files were added, removed or changed since the store."""
    stored = {p: (s, m) for p, s, m in zip(
        f["samples/path"].asstr()[:], f["samples/size"][:], f["samples/mtime_ns"][:])}
    current = {s.path: (s.size, s.mtime_ns) for s in dataset.samples}
    added = sorted(set(current) - set(stored))
    removed = sorted(set(stored) - set(current))
    changed = sorted(p for p in set(current) & set(stored) if tuple(current[p]) != tuple(stored[p]))
    parts = [f"{len(v)} {what} (e.g. {v[0]})" for what, v in
             (("added", added), ("removed", removed), ("changed", changed)) if v]
    return "the dataset changed: " + (", ".join(parts) or "labels, splits or classes differ")


def plain(value):
    """An attribute as plain Python (numpy scalars and arrays -> int/float/list), for comparing."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def short(value) -> str:
    """A value for a one-line message: JSON, cut at 80 characters."""
    text = json.dumps(plain(value), sort_keys=True, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."


# What h5py raises when the disk fills or a write fails: OSError from the OS, but ValueError and
# RuntimeError from HDF5's own layers (a failed flush or chunk allocation).
WRITE_ERRORS = (OSError, ValueError, RuntimeError)


def os_reason(exc: BaseException) -> str:
    """The useful part of an OS or HDF5 error: "disk full", or its first line."""
    text = str(exc).strip()
    if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space" in text \
            or "quota exceeded" in text.lower():
        return "disk full"
    return text.splitlines()[0][:200] if text else type(exc).__name__


def write_error(path: Path, exc: BaseException, doing: str) -> StoreError:
    """One line for a failed write of the store at `path`: "disk full" or "cannot write"."""
    reason = os_reason(exc)
    what = "disk full" if reason == "disk full" else f"cannot write ({reason})"
    return StoreError(f"{path}: {doing} failed: {what}")
