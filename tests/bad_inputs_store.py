"""Bad inputs of the feature store and of extraction: `featx info`, `train-head` and `predict` on
damaged stores, `featx extract` options and output folders, `featx merge` (featx/store/,
featx/extraction/)."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.bad_input_harness import Case, World, make_dir, write_file


def store_copy(change=None):
    """Setup: a copy of the world's complete store at {tmp}/x.h5, then `change(f)` on it."""
    def setup(tmp: Path, world: World) -> None:
        shutil.copy(world.store, tmp / "x.h5")
        if change is not None:
            with h5py.File(tmp / "x.h5", "r+") as f:
                change(f)
    return setup


def set_attr(name, value):
    def change(f):
        f.attrs[name] = value
    return change


def drop(name):
    def change(f):
        if name in f:
            del f[name]
        else:
            del f.attrs[name]
    return change


def incomplete(f) -> None:
    """What a killed extraction leaves: the last rows not done, `complete` still 0."""
    f["done/clean"][-1] = 0
    f.attrs["complete"] = np.uint8(0)




def read_only_dir(tmp: Path, world: World) -> None:
    """{tmp}/ro that nobody may write to, root included (chattr +i); skip where impossible."""
    folder = tmp / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0 and shutil.which("chattr"):
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
            atexit.register(subprocess.run, ["chattr", "-i", str(folder)], capture_output=True)
    try:
        (folder / "probe").touch()
    except OSError:
        return
    (folder / "probe").unlink()
    pytest.skip("cannot make a read-only folder here")


def shards(change_second=None, ranks=(0, 1)):
    """Setup: the world's store dressed as shards {tmp}/s.shardRRR-of-002.h5 of a 2-process run."""
    def setup(tmp: Path, world: World) -> None:
        with h5py.File(world.store, "r") as f:
            n = int(f["features/clean"].shape[0])
        for rank in ranks:
            path = tmp / f"s.shard{rank:03d}-of-002.h5"
            shutil.copy(world.store, path)
            with h5py.File(path, "r+") as f:
                f.attrs.update({"shard_rank": rank, "shard_world_size": 2, "shard_start": rank * n,
                                "shard_stop": (rank + 1) * n, "full_num_samples": 2 * n,
                                "full_dataset_fingerprint": "x", "sharding": "contiguous"})
                if rank == 1 and change_second:
                    change_second(f)
    return setup


def named_like_the_store(make):
    """Setup: {tmp}/stores/<the name extract gives the world's store> made by `make(path, world)`."""
    def setup(tmp: Path, world: World) -> None:
        (tmp / "stores").mkdir()
        make(tmp / "stores" / Path(world.store).name, world)
    return setup


def damaged_copy(path: Path, world: World) -> None:
    shutil.copy(world.store, path)
    with h5py.File(path, "r+") as f:
        f.attrs["transform"] = "{not json"


def text_file(tmp: Path, world: World) -> None:
    (tmp / "w.safetensors").write_text("these are not weights\n")


def a_file(tmp: Path, world: World) -> None:
    (tmp / "afile").write_text("x")


UPDATE = ["extract", "{tmp}/d", "-b", "tiny_cnn", "--weights", "none", "--workers", "0", "--out", "{tmp}/s"]


def tampered_store_of_changed_data(tmp: Path, world: World) -> None:
    """{tmp}/s: the store of {tmp}/d (extracted with UPDATE's command) whose store_version reads
    "two", and one more image in {tmp}/d: the update must refuse it, not raise ValueError."""
    from typer.testing import CliRunner

    from featx.cli import app

    shutil.copytree(world.data, tmp / "d")
    args = [a.replace("{tmp}", str(tmp)) for a in UPDATE]
    assert CliRunner().invoke(app, args).exit_code == 0
    shutil.copy(next(world.data.rglob("*.png")), next((tmp / "d").iterdir()) / "extra.png")
    with h5py.File(next((tmp / "s").glob("*.h5")), "r+") as f:
        f.attrs["store_version"] = "two"


EXTRACT = ["extract", "{data}", "-b", "tiny_cnn", "--weights", "none", "--workers", "0", "--out", "{out}"]
X = "{tmp}/x.h5"

CASES = [
    # --- damaged stores, read by info / train-head / predict ------------------------------------
    Case("store-info-no-classes", ["info", X], r"x\.h5: .*classes", setup=store_copy(drop("classes"))),
    Case("store-train-no-classes", ["train-head", X, "--out", "{out}"], r"x\.h5: .*classes",
         setup=store_copy(drop("classes"))),
    Case("store-info-no-aug-rows", ["info", X], r"x\.h5: .*features/aug_rows",
         setup=store_copy(drop("features/aug_rows"))),
    Case("store-train-no-aug-rows", ["train-head", X, "--out", "{out}"], r"x\.h5: .*features/aug_rows",
         setup=store_copy(drop("features/aug_rows"))),
    Case("store-info-transform-not-json", ["info", X], r"x\.h5: .*transform",
         setup=store_copy(set_attr("transform", "{not json"))),
    Case("store-train-transform-not-json", ["train-head", X, "--out", "{out}"], r"x\.h5: .*transform",
         setup=store_copy(set_attr("transform", "{not json"))),
    Case("store-info-no-backbone", ["info", X], r"x\.h5: .*backbone", setup=store_copy(drop("backbone"))),
    Case("store-predict-no-backbone", ["predict", X, "--head", "{head}", "--out", "{out}/p.csv"],
         r"x\.h5: .*backbone", setup=store_copy(drop("backbone"))),
    Case("store-info-wrong-dim", ["info", X], r"x\.h5: .*feature_dim",
         setup=store_copy(set_attr("feature_dim", 99))),
    Case("store-train-wrong-dim", ["train-head", X, "--out", "{out}"], r"x\.h5: .*feature_dim",
         setup=store_copy(set_attr("feature_dim", 99))),
    Case("store-info-not-hdf5", ["info", X], r"x\.h5: .*not an HDF5", setup=write_file("x.h5", b"hello\n" * 50)),
    Case("store-train-empty-file", ["train-head", X, "--out", "{out}"], r"x\.h5: .*empty",
         setup=write_file("x.h5", b"")),
    Case("store-info-a-folder", ["info", X], r"x\.h5: .*folder", setup=make_dir("x.h5")),
    Case("store-info-format-version", ["info", X], r"x\.h5: .*store format 99",
         setup=store_copy(set_attr("format_version", 99))),
    Case("store-train-no-aug-features", ["train-head", X, "--out", "{out}"], r"x\.h5: .*features/aug",
         setup=store_copy(drop("features/aug"))),
    Case("store-info-missing", ["info", "{tmp}/none.h5"], r"none\.h5: no such store"),
    Case("store-train-incomplete", ["train-head", X, "--out", "{out}"], r"x\.h5: .*incomplete",
         setup=store_copy(incomplete)),
    Case("store-predict-incomplete", ["predict", X, "--head", "{head}", "--out", "{out}/p.csv"],
         r"x\.h5: .*incomplete", setup=store_copy(incomplete)),
    # --- extract: options and output folders --------------------------------------------------
    Case("store-extract-views-negative", EXTRACT + ["--views", "-1"], r"--views", code=2),
    Case("store-extract-views-huge", EXTRACT + ["--views", "1000000000"], r"views", code=2),
    Case("store-extract-batch-size-zero", EXTRACT + ["--batch-size", "0"], r"--batch-size", code=2),
    Case("store-extract-dtype-float8", EXTRACT + ["--dtype", "float8"], r"--dtype", code=2),
    Case("store-extract-engine-unknown", EXTRACT + ["--engine", "gpu-magic"], r"--engine", code=2),
    Case("store-extract-device-cuda", EXTRACT + ["--device", "cuda"], r"CUDA is not available", code=2),
    Case("store-extract-input-size-zero", EXTRACT + ["--input-size", "0"], r"--input-size", code=2),
    Case("store-extract-input-size-huge", EXTRACT + ["--input-size", "100000"], r"input.size", code=2),
    Case("store-extract-cut-nonsense", EXTRACT + ["--cut", "nonsense"], r"nonsense"),
    Case("store-extract-threads-zero", EXTRACT + ["--threads", "0"], r"--threads", code=2),
    Case("store-extract-out-is-a-file", EXTRACT[:-1] + ["{tmp}/afile"], r"afile: .*not a folder",
         setup=a_file),
    Case("store-extract-out-read-only", EXTRACT[:-1] + ["{tmp}/ro"], r"ro: .*(read-only|cannot write)",
         setup=read_only_dir),
    Case("store-extract-weights-missing", EXTRACT[:4] + ["--weights", "{tmp}/none.safetensors"]
         + EXTRACT[6:], r"none\.safetensors: .*not found"),
    Case("store-extract-weights-text", EXTRACT[:4] + ["--weights", "{tmp}/w.safetensors"] + EXTRACT[6:],
         r"w\.safetensors", setup=text_file),
    Case("store-extract-over-not-hdf5", EXTRACT[:-1] + ["{tmp}/stores", "--views", "1"],
         r"mildx1\.h5: not an HDF5 file",
         setup=named_like_the_store(lambda p, w: p.write_text("not a store"))),
    Case("store-extract-over-damaged", EXTRACT[:-1] + ["{tmp}/stores", "--views", "1"],
         r"mildx1\.h5: .*transform", setup=named_like_the_store(damaged_copy)),
    # --- merge ------------------------------------------------------------------------------
    Case("store-merge-foreign-shards", ["merge", "{tmp}/s.shard000-of-002.h5", "{tmp}/s.shard001-of-002.h5",
                                        "--out", "{out}/m.h5"], r"shard001-of-002\.h5: cannot merge .*seed",
         setup=shards(set_attr("seed", 7))),
    Case("store-merge-missing-shard-file", ["merge", "{tmp}/s.shard000-of-002.h5",
                                            "{tmp}/s.shard001-of-002.h5", "--out", "{out}/m.h5"],
         r"shard001-of-002\.h5: no such store", setup=shards(ranks=(0,))),
    Case("store-merge-missing-rank", ["merge", "{tmp}/s.shard000-of-002.h5", "--out", "{out}/m.h5"],
         r"missing rank", setup=shards(ranks=(0,))),
    Case("store-merge-incomplete-shard", ["merge", "{tmp}/s.shard000-of-002.h5", "{tmp}/s.shard001-of-002.h5",
                                          "--out", "{out}/m.h5"], r"shard001-of-002\.h5: shard is incomplete",
         setup=shards(incomplete)),
    Case("store-merge-out-a-folder", ["merge", "{tmp}/s.shard000-of-002.h5", "{tmp}/s.shard001-of-002.h5",
                                      "--out", "{tmp}"], r"--out .*is a folder", setup=shards()),
    Case("store-merge-not-shards", ["merge", "{store}", "--out", "{out}/m.h5"], r"not a shard store"),
    Case("store-merge-out-read-only", ["merge", "{tmp}/s.shard000-of-002.h5", "{tmp}/s.shard001-of-002.h5",
                                       "--out", "{tmp}/ro/m.h5"], r"ro.*(read-only|cannot write)",
         setup=lambda tmp, w: (shards()(tmp, w), read_only_dir(tmp, w))),
    Case("store-info-on-a-head", ["info", "{head}"], r"safetensors: this is a trained head .*not a feature store"),
    # A tampered version or history is one line at open (issue 32), for every command.
    Case("store-history-not-versions", ["info", X], r"x\.h5: .*attribute history is not a JSON list of versions",
         setup=store_copy(set_attr("history", "[1, 2, 3]"))),
    Case("store-version-a-word", ["info", X], r"x\.h5: .*attribute store_version is 'two'",
         setup=store_copy(set_attr("store_version", "two"))),
    Case("store-version-negative", ["info", X], r"x\.h5: .*attribute store_version is '-5'",
         setup=store_copy(set_attr("store_version", np.int64(-5)))),
    Case("store-version-not-history", ["train-head", X, "--out", "{out}"],
         r"x\.h5: .*history ends at version 1, store_version is 4",
         setup=store_copy(set_attr("store_version", np.int64(4)))),
    Case("store-update-version-a-word", UPDATE,
         r"\.h5: .*attribute store_version is 'two'", setup=tampered_store_of_changed_data),
]
