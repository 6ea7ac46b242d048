"""Merge the shard stores of a distributed extraction into one store.

    merge_shards(sorted(Path("stores").glob("elpv_*.shard*-of-002.h5")), Path("stores/elpv_....h5"))

Two layouts for the result:
- `copy` (default): one self-contained file, features concatenated; the shards can be deleted.
  Features are small next to the images they come from (ELPV x lite0: 7 MB), so the copy is cheap,
  and a self-contained file is what users move, share and archive.
- `virtual`: an HDF5 virtual dataset over the shards' features and cut maps (sample tables are
  copied); no feature copy, but the shard files must stay where they are.

The features, their views and the maps of a `--cut` are all merged (and copied a block at a
time, so memory stays flat at a million rows).

Shards are checked before anything is written: same backbone, weights, transform, seed, dtype,
engine, device, decode, amp, dataset and world size; every rank present once; row ranges contiguous; all complete.
The merged file is written atomically (featx.runtime.atomic): a kill leaves no file or the whole one.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import h5py
import numpy as np

from featx.runtime.atomic import atomic_write
from featx.runtime.settings import MERGE_MODES
from featx.errors import StoreError
from featx.store.check import OPTIONAL_PER_SAMPLE
from featx.store.reader import open_store_file
from featx.store.schema import IDENTITY_KEYS, WRITE_ERRORS, plain, short, write_error
from featx.store.space import check_room, check_writable

SHARD_KEYS = ("shard_rank", "shard_world_size", "shard_start", "shard_stop", "full_num_samples",
              "full_dataset_fingerprint", "sharding")
# Must agree across shards (dataset_fingerprint is per shard: full_dataset_fingerprint is shared).
MATCH_KEYS = tuple(k for k in IDENTITY_KEYS if k != "dataset_fingerprint") + (
    "engine", "device", "decode", "amp", "shard_world_size", "full_num_samples",
    "full_dataset_fingerprint", "format_version")
MODES = MERGE_MODES
COPY_BYTES = 64 * 2**20  # copied from a shard per read/write
COPY_ROWS = 65_536  # and at most this many rows (a path is a Python string once read)
# Per-row tables, concatenated in rank order (done/aug and features/aug along their axis 1).
ROW_TABLES = ("samples/path", "samples/label", "samples/split", "samples/size",
              "samples/mtime_ns", "done/clean", "failed/reason")


def shard_path(store: Path, rank: int, world_size: int) -> Path:
    """Where rank `rank` of a `world_size`-process run writes its part of `store`."""
    return store.with_name(f"{store.stem}.shard{rank:03d}-of-{world_size:03d}.h5")


def merge_shards(shards: list[Path], out: Path, mode: str = "copy") -> Path:
    """Check the shards, then write the merged store atomically at `out`."""
    if mode not in MODES:
        raise StoreError(f"merge mode must be copy or virtual, got {mode!r}")
    if not shards:
        raise StoreError("no shard stores given")
    infos = sorted((_shard_info(Path(p)) for p in shards), key=lambda i: i["attrs"]["shard_rank"])
    _check_agree(infos)
    _check_cover(infos)
    out = Path(out)
    _check_out(out, infos, mode)

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            _write_merged(f, infos, out, mode)

    try:
        return atomic_write(out, write)
    except WRITE_ERRORS as exc:  # the temporary file is gone; the shards are untouched
        raise write_error(out, exc, "merging") from None


def _check_out(out: Path, infos: list[dict], mode: str) -> None:
    """A file path in a folder we may write to, with room for the copy (before any write)."""
    if out.is_dir():
        raise StoreError(f"--out {out}: is a folder; give the merged store's file name")
    check_writable(out.parent)
    if mode == "copy":
        planned = sum(Path(i["path"]).stat().st_size for i in infos)
        check_room(out, planned, freed=out.stat().st_size if out.is_file() else 0,
                   what="merged store")


def _shard_info(path: Path) -> dict:
    with open_store_file(path) as f:
        attrs = {k: plain(v) for k, v in f.attrs.items()}
    missing = [k for k in SHARD_KEYS if k not in attrs]
    if missing:
        raise StoreError(f"{path}: not a shard store (no {', '.join(missing)})")
    return {"path": path, "attrs": attrs}


def _check_agree(infos: list[dict]) -> None:
    """Every shard made with the same settings as the first, naming each key that differs."""
    first = infos[0]
    for info in infos[1:]:
        found = [f"{k} is {short(info['attrs'].get(k))} in it, {short(first['attrs'].get(k))} "
                 f"in {first['path'].name}" for k in MATCH_KEYS
                 if info["attrs"].get(k) != first["attrs"].get(k)]
        if found:
            raise StoreError(f"{info['path']}: cannot merge with the other shards: " + "; ".join(found))


def _check_cover(infos: list[dict]) -> None:
    """Every rank once, complete, and their rows end to end over the whole dataset."""
    first = infos[0]
    world = int(first["attrs"]["shard_world_size"])
    ranks = [int(i["attrs"]["shard_rank"]) for i in infos]
    if ranks != list(range(world)):
        missing = sorted(set(range(world)) - set(ranks))
        extra = sorted(r for r in set(ranks) if ranks.count(r) > 1)
        raise StoreError(f"shards of a {world}-process run: "
                         + (f"missing rank(s) {missing}" if missing else f"rank(s) {extra} given twice"))
    expected = 0
    for info in infos:
        a = info["attrs"]
        if int(a["shard_start"]) != expected:
            raise StoreError(f"{info['path']}: rows start at {a['shard_start']}, expected {expected}")
        if not a.get("complete"):
            raise StoreError(f"{info['path']}: shard is incomplete; re-run the same torchrun "
                             "command to finish it")
        expected = int(a["shard_stop"])
    if expected != int(first["attrs"]["full_num_samples"]):
        raise StoreError(f"shards cover {expected} of {first['attrs']['full_num_samples']} samples")


def _write_merged(f: h5py.File, infos: list[dict], out: Path, mode: str) -> None:
    seconds = _write_merged_attrs(f, infos, mode)
    files = [h5py.File(i["path"], "r", locking=False) for i in infos]
    try:
        f.create_dataset("classes", data=files[0]["classes"][:], dtype=files[0]["classes"].dtype)
        f.create_dataset("class_names", data=files[0]["class_names"][:],
                         dtype=files[0]["class_names"].dtype)
        optional = tuple(k for k in OPTIONAL_PER_SAMPLE if all(k in fi for fi in files))
        for name in ROW_TABLES + optional:
            _concat(f, files, name, axis=0)
        _concat(f, files, "done/aug", axis=1)
        offsets = [int(i["attrs"]["shard_start"]) for i in infos]
        f.create_dataset("features/aug_rows", data=np.concatenate(
            [fi["features/aug_rows"][:] + off for fi, off in zip(files, offsets)]))
        n_images = sum(int(fi["done/clean"].shape[0]) + int(fi["done/aug"].size) for fi in files)
        f.attrs["images_per_second"] = np.float64(n_images / seconds if seconds else 0.0)
        for name in _feature_tables(files[0]):
            axis = 0 if name.endswith("/clean") else 1  # views: [K, n_train, ...]
            if mode == "copy":
                _concat(f, files, name, axis)
            else:
                _virtual(f, files, [i["path"] for i in infos], name, axis, out)
        f.attrs["complete"] = np.uint8(1)
    finally:
        for fi in files:
            fi.close()


def _write_merged_attrs(f: h5py.File, infos: list[dict], mode: str) -> float:
    """The first shard's attributes as the whole run's; returns the run's seconds (the slowest
    rank's: ranks run side by side)."""
    first = infos[0]["attrs"]
    for key, value in first.items():
        if key not in SHARD_KEYS:
            f.attrs[key] = value
    seconds = max(float(i["attrs"].get("extract_seconds", 0.0)) for i in infos)
    f.attrs["num_failed"] = sum(int(i["attrs"].get("num_failed", 0)) for i in infos)
    f.attrs["dataset_fingerprint"] = first["full_dataset_fingerprint"]
    f.attrs["sharding"] = first["sharding"]
    if "history" in first:  # the shards' first version counted their own rows
        history = json.loads(first["history"])
        history[-1]["samples"] = int(first["full_num_samples"])
        f.attrs["history"] = json.dumps(history)
    f.attrs["merged_from"] = json.dumps([i["path"].name for i in infos])
    f.attrs["merge_mode"] = mode
    f.attrs["merged"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    f.attrs["world_size"] = int(first["shard_world_size"])
    f.attrs["extract_seconds"] = np.float64(seconds)
    return seconds


def _feature_tables(f: h5py.File) -> list[str]:
    """The feature tables of a store: clean, then views, then the maps of its --cut, if any."""
    names = ["features/clean"] + (["features/aug"] if "aug" in f["features"] else [])
    for cut in f.get("cut", {}):
        names += [f"cut/{cut}/{view}" for view in ("clean", "aug") if view in f[f"cut/{cut}"]]
    return names


def _concat(f: h5py.File, files: list[h5py.File], name: str, axis: int) -> None:
    """`name` of every shard end to end along `axis`, copied COPY_BYTES at a time: a million
    rows of 1,280-d float16 features (2.6 GB) never sit in memory at once. Variable-length
    strings (paths) count 8 bytes a row here, so at most COPY_ROWS rows are copied at a time."""
    sources = [fi[name] for fi in files]
    shape = list(sources[0].shape)
    shape[axis] = sum(src.shape[axis] for src in sources)
    nonempty = all(src.size for src in sources)
    out = f.create_dataset(name, shape=tuple(shape), dtype=sources[0].dtype,
                           chunks=sources[0].chunks if nonempty else None)
    offset = 0
    for src in sources:
        length = src.shape[axis]
        step = min(COPY_ROWS, max(1, COPY_BYTES * length // max(1, src.size * src.dtype.itemsize)))
        for start in range(0, length, step):
            stop = min(length, start + step)
            out[_along(axis, offset + start, offset + stop)] = src[_along(axis, start, stop)]
        offset += length


def _along(axis: int, start: int, stop: int) -> tuple:
    """The index of [start, stop) along `axis` (every index before it whole)."""
    return (slice(None),) * axis + (slice(start, stop),)


def _virtual(f: h5py.File, files: list[h5py.File], paths: list[Path], name: str, axis: int,
             out: Path) -> None:
    shapes = [fi[name].shape for fi in files]
    total = list(shapes[0])
    total[axis] = sum(s[axis] for s in shapes)
    layout = h5py.VirtualLayout(shape=tuple(total), dtype=files[0][name].dtype)
    offset = 0
    for path, shape in zip(paths, shapes):
        # Relative to the merged file, so the folder can move as a whole.
        source = h5py.VirtualSource(os.path.relpath(path, out.parent), name, shape=shape)
        index = [slice(None)] * len(shape)
        index[axis] = slice(offset, offset + shape[axis])
        layout[tuple(index)] = source
        offset += shape[axis]
    f.create_virtual_dataset(name, layout, fillvalue=0)
