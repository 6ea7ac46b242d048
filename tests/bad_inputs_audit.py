"""Bad inputs of `featx audit`, `featx search` and `featx export` (featx/audit/, featx/store/export.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.bad_input_harness import Case, World


def incomplete_store(tmp: Path, world: World) -> None:
    """The world's store as a kill leaves it: rows written, never marked complete."""
    import h5py
    import numpy as np

    shutil.copy(world.store, tmp / "s.h5")
    with h5py.File(tmp / "s.h5", "r+") as f:
        f.attrs["complete"] = np.uint8(0)


def features_set(value: float, rows=slice(None)):
    """{tmp}/s.h5: the world's store with features/clean[rows] set to `value` (NaN, inf, 0)."""
    def setup(tmp: Path, world: World) -> None:
        import h5py

        shutil.copy(world.store, tmp / "s.h5")
        with h5py.File(tmp / "s.h5", "r+") as f:
            x = f["features/clean"][()]
            x[rows] = value
            f["features/clean"][...] = x
    return setup


def garbage(name: str, blob: bytes):
    def setup(tmp: Path, world: World) -> None:
        (tmp / name).write_bytes(blob)
    return setup


def export_folder_with(name: str, folder: bool):
    """{tmp}/D holding `name` as a file or a folder (where an export puts the other kind)."""
    def setup(tmp: Path, world: World) -> None:
        (tmp / "D").mkdir()
        (tmp / "D" / name).mkdir() if folder else (tmp / "D" / name).write_text("x")
    return setup


AUDIT = ["audit", "--out", "{out}"]
EXPORT_D = ["export", "{store}", "--out", "{tmp}/D"]

CASES = [
    Case("audit-no-store", AUDIT + ["{tmp}/none.h5"], r"none\.h5: no such store"),
    Case("audit-not-hdf5", AUDIT + ["{tmp}/x.h5"], r"x\.h5: not an HDF5 file", setup=garbage("x.h5", b"hello" * 100)),
    Case("audit-incomplete", AUDIT + ["{tmp}/s.h5"], r"s\.h5: the store is incomplete", setup=incomplete_store),
    Case("audit-threshold-above-one", AUDIT + ["{store}", "--threshold", "1.5"], r"--threshold 1\.5: a cosine",
         code=2),
    Case("audit-threshold-nan", AUDIT + ["{store}", "--threshold", "nan"], r"--threshold", code=2),
    Case("audit-unknown-check", AUDIT + ["{store}", "--checks", "typos"], r"--checks.*'typos'", code=2),
    Case("audit-outlier-k-above-k", AUDIT + ["{store}", "--k", "3", "--outlier-k", "5"], r"--outlier-k 5", code=2),
    Case("audit-hash-bits-65", AUDIT + ["{store}", "--hash-bits", "65"], r"--hash-bits", code=2),
    Case("audit-out-is-a-file", ["audit", "{store}", "--out", "{tmp}/f"], r"--out .*f: exists and is not a folder",
         code=2, setup=garbage("f", b"x")),
    Case("search-query-undecodable", ["search", "{store}", "{tmp}/q.jpg", "--device", "cpu"],
         r"q\.jpg: cannot search with it", setup=garbage("q.jpg", b"\xff\xd8 not a jpeg")),
    Case("search-query-missing", ["search", "{store}", "{tmp}/none.png"], r"no images found"),
    Case("search-incomplete", ["search", "{tmp}/s.h5", "{data}"], r"s\.h5: the store is incomplete",
         setup=incomplete_store),
    Case("search-top-k-zero", ["search", "{store}", "{data}", "--top-k", "0"], r"--top-k", code=2),
    Case("export-incomplete", ["export", "{tmp}/s.h5", "--out", "{out}"], r"s\.h5: the store is incomplete",
         setup=incomplete_store),
    Case("export-unknown-index", ["export", "{store}", "--out", "{out}", "--index", "hnsw"], r"--index.*'hnsw'",
         code=2),
    Case("export-shard-rows-zero", ["export", "{store}", "--out", "{out}", "--shard-rows", "0"], r"--shard-rows",
         code=2),
    # An export replaces its folder as a whole (issue 32): what is in the way is named before any write.
    Case("export-embeddings-is-a-file", EXPORT_D, r"--out .*D: not a featx export folder \(embeddings is a file\)",
         code=2, setup=export_folder_with("embeddings", folder=False)),
    Case("export-index-is-a-folder", EXPORT_D, r"--out .*D: not a featx export folder \(index\.faiss is a folder\)",
         code=2, setup=export_folder_with("index.faiss", folder=True)),
    Case("export-into-a-folder-of-other-files", EXPORT_D, r"--out .*D: not a featx export folder \(it holds notes\.txt\)",
         code=2, setup=export_folder_with("notes.txt", folder=False)),
    # Degenerate or non-finite features: one line from every command that reads them (issue 32).
    Case("audit-nan-row", AUDIT + ["{tmp}/s.h5"], r"s\.h5: the features are degenerate: 1 of \d+ rows hold NaN or inf",
         setup=features_set(float("nan"), rows=3)),
    Case("audit-inf-outliers-only", AUDIT + ["{tmp}/s.h5", "--checks", "duplicates", "--checks", "outliers"],
         r"s\.h5: the features are degenerate: 1 of \d+ rows hold NaN or inf", setup=features_set(float("inf"), rows=0)),
    Case("audit-all-zero", AUDIT + ["{tmp}/s.h5"], r"s\.h5: the features are degenerate: all \d+ rows are zero",
         setup=features_set(0.0)),
    Case("search-constant-features", ["search", "{tmp}/s.h5", "{data}", "--device", "cpu"],
         r"s\.h5: the features are degenerate: every column is constant", setup=features_set(0.5)),
    Case("train-head-nan-rows", ["train-head", "{tmp}/s.h5", "--kind", "logreg", "--out", "{out}"],
         r"s\.h5: the features are degenerate: .* NaN or inf", setup=features_set(float("nan"))),
    Case("train-head-knn-all-nan", ["train-head", "{tmp}/s.h5", "--kind", "knn", "--out", "{out}"],
         r"s\.h5: the features are degenerate: .* NaN or inf", setup=features_set(float("nan"))),
]
