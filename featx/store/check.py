"""Is this file a featx store? The cheap checks of docs/store.md's layout, run at every open.

    with open_h5(path) as f:
        check_layout(f, path)   # StoreError naming the file and what is wrong, or nothing

A store someone edited, truncated or wrote with another tool must be one clear line at open,
not a KeyError deep in `featx info` or a head trained on the wrong rows. Only shapes and
attributes are read (no feature rows), so this costs the same on a 10 GB store as on a tiny one.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py

from featx.errors import StoreError
from featx.store.schema import FORMAT_VERSION, JSON_ATTRS, plain

# Attributes every reader relies on (docs/store.md, "One store").
REQUIRED_ATTRS = ("format_version", "backbone", "weights", "weights_sha256", "feature_dim",
                  "input_size", "transform", "num_aug_views", "dtype")
# Datasets every store has, with or without augmented views.
REQUIRED_DATASETS = ("classes", "class_names", "samples/path", "samples/label", "samples/split",
                     "samples/size", "samples/mtime_ns", "features/clean", "features/aug_rows",
                     "done/clean", "done/aug", "failed/reason")
# Datasets with one row per sample: their first axis is N.
PER_SAMPLE = ("samples/label", "samples/split", "samples/size", "samples/mtime_ns", "done/clean",
              "failed/reason")

# Per-sample tables a store may lack: content hashes came with featx's living stores (issue 19);
# an older store gets them at its first update.
OPTIONAL_PER_SAMPLE = ("samples/sha256",)


def check_layout(f: h5py.File, path: Path) -> None:
    """Raise StoreError naming `path` and the first thing that breaks the store contract."""
    problem = layout_problem(f)
    if problem:
        raise StoreError(f"{path}: damaged or not a featx store ({problem}); move it aside, or "
                         "re-run `featx extract` with --overwrite")


def layout_problem(f: h5py.File) -> str | None:
    """What is wrong with the store open as `f`, in a few words, or None."""
    missing = [k for k in REQUIRED_ATTRS if k not in f.attrs]
    if missing:
        return f"attribute {', '.join(missing)} missing"
    if _number(f.attrs["format_version"]) != FORMAT_VERSION:
        return f"store format {plain(f.attrs['format_version'])}, this featx reads format {FORMAT_VERSION}"
    for key in JSON_ATTRS:
        problem = _json_problem(key, f.attrs[key])
        if problem:
            return problem
    problem = _version_problem(f.attrs)
    if problem:
        return problem
    missing = [k for k in REQUIRED_DATASETS if not isinstance(f.get(k), h5py.Dataset)]
    if missing:
        return f"{', '.join(missing)} missing"
    return _shape_problem(f)


def _version_problem(attrs) -> str | None:
    """store_version is a whole number >= 1 and history (when there) a JSON list of versions, the
    last one the store's: `featx info`, updates and heads' staleness read them."""
    version = plain(attrs["store_version"]) if "store_version" in attrs else 1
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        return f"attribute store_version is {str(version)[:40]!r}, not a version (1, 2, ...)"
    if "history" not in attrs:
        return None
    value = plain(attrs["history"])
    try:
        versions = json.loads(value) if isinstance(value, str) else None
    except json.JSONDecodeError:
        versions = None
    if (not isinstance(versions, list) or not versions
            or not all(isinstance(v, dict) and type(v.get("version")) is int for v in versions)):
        return "attribute history is not a JSON list of versions ({\"version\": 1, ...})"
    if versions[-1]["version"] != version:
        return f"attribute history ends at version {versions[-1]['version']}, store_version is {version}"
    return None


def _json_problem(key: str, value) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    try:
        decoded = json.loads(value) if isinstance(value, str) else None
    except json.JSONDecodeError:
        decoded = None
    if not isinstance(decoded, dict):
        return f"attribute {key} is not a JSON object"
    if key == "transform" and not isinstance(decoded.get("clean"), dict):
        return "attribute transform has no 'clean' preprocessing"
    return None


def _shape_problem(f: h5py.File) -> str | None:
    """The tables agree with each other and with the attributes (N samples, T training rows,
    K views, D features)."""
    n = _rows(f["samples/path"])
    for name in PER_SAMPLE + tuple(k for k in OPTIONAL_PER_SAMPLE if k in f):
        if _rows(f[name]) != n:
            return f"{name} has {_rows(f[name])} rows, samples/path {n}"
    if _rows(f["class_names"]) != _rows(f["classes"]):
        return f"{_rows(f['class_names'])} class_names for {_rows(f['classes'])} classes"
    d, k = _number(f.attrs["feature_dim"]), _number(f.attrs["num_aug_views"])
    clean = f["features/clean"].shape
    if len(clean) != 2 or clean[0] != n or clean[1] != d:
        return f"feature_dim is {d} and {n} samples, but features/clean is {list(clean)}"
    t = _rows(f["features/aug_rows"])
    rows = f["features/aug_rows"][()]  # N_train integers: cheap next to any feature read
    if t and (rows.min() < 0 or rows.max() >= n):
        return f"features/aug_rows points outside the {n} samples"
    if f["done/aug"].shape != (k, t):
        return f"done/aug is {list(f['done/aug'].shape)}, expected [{k}, {t}] (views, training rows)"
    aug = f["features"].get("aug")
    if k and (aug is None or aug.shape != (k, t, d)):
        return f"features/aug is {list(aug.shape) if aug is not None else 'missing'}, expected [{k}, {t}, {d}]"
    return None


def _rows(dataset: h5py.Dataset) -> int:
    return int(dataset.shape[0]) if dataset.shape else -1


def _number(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
