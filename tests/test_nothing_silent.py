"""Issue 32, nothing silent (round three): featx never reads its own outputs as data, never
changes a store's dataset silently, and names what it cannot use."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from featx.data import open_dataset
from featx.errors import StoreError
from featx.extraction import extract
from featx.runtime.atomic import OUTPUT_MARKER, atomic_write
from tests.conftest import make_class_tree, write_image

TINY = dict(weights="none", batch_size=8, views=0, workers=0, engine="torch")


def _png(path: Path) -> Path:
    """A plot featx writes (lr-find, a report's figure), through the one writer every output uses."""
    image = write_image(path.parent.parent / "plot-source.png", 99)
    atomic_write(path, lambda tmp: shutil.copyfile(image, tmp))
    image.unlink()
    return path


def test_a_dataset_never_reads_featx_outputs_written_inside_it(tmp_path, monkeypatch):
    data = make_class_tree(tmp_path / "data", classes=("a", "b", "c"), per_class=4)
    monkeypatch.chdir(data)
    extract(open_dataset("."), "tiny_cnn", Path("stores"), show_progress=False, **TINY)
    _png(Path("heads") / "lin.lr-find.png")  # `featx lr-find stores/X.h5` (default --out heads)
    assert (data / "stores" / OUTPUT_MARKER).is_file() and (data / "heads" / OUTPUT_MARKER).is_file()
    again = open_dataset(".")
    assert again.classes == ["a", "b", "c"] and len(again.samples) == 12
    assert any("heads" in n and "featx's own outputs" in n for n in again.notes)
    assert extract(again, "tiny_cnn", Path("stores"), show_progress=False, **TINY).status == "complete"


def test_an_unlabelled_folder_stays_unlabelled_beside_its_store_and_report(tmp_path):
    un = tmp_path / "un"
    for i in range(10):
        write_image(un / f"img_{i}.png", i)
    extract(open_dataset(un), "tiny_cnn", un / "stores", show_progress=False, **TINY)
    _png(un / "stores" / "report_files" / "curve.png")
    again = open_dataset(un)
    assert again.layout == "unlabeled-folder" and len(again.samples) == 10
    assert extract(again, "tiny_cnn", un / "stores", show_progress=False, **TINY).status == "complete"


def test_a_folder_the_user_made_is_never_marked(tmp_path):
    (tmp_path / "mine").mkdir()
    atomic_write(tmp_path / "mine" / "deep" / "x.txt", lambda tmp: tmp.write_text("x"))
    assert not (tmp_path / "mine" / OUTPUT_MARKER).exists()
    assert (tmp_path / "mine" / "deep" / OUTPUT_MARKER).is_file()


def test_a_change_of_layout_is_refused_not_applied(tmp_path):
    data = make_class_tree(tmp_path / "data", classes=("a", "b"), per_class=5)
    extract(open_dataset(data), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY)
    for image in list(data.rglob("*.png")):  # class folders -> one unlabelled folder
        image.rename(data / image.name)
    for folder in ("a", "b"):
        (data / folder).rmdir()
    with pytest.raises(StoreError, match="read as unlabeled-folder now, the store holds class-folders"):
        extract(open_dataset(data), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY)
    assert extract(open_dataset(data), "tiny_cnn", tmp_path / "s", show_progress=False, overwrite=True,
                   **TINY).status == "created"


def test_the_current_folder_names_the_store_by_its_real_name(tmp_path, monkeypatch):
    data = make_class_tree(tmp_path / "cells", per_class=3)
    monkeypatch.chdir(data)
    dataset = open_dataset(".")
    assert dataset.name == "cells"
    store = extract(dataset, "tiny_cnn", tmp_path / "s", show_progress=False, **TINY).store
    assert Path(store).name.startswith("cells_tiny_cnn")
    assert os.path.isabs(str(__import__("featx").store.read_attrs(Path(store))["dataset_root"]))


def _tiny_store(tmp_path: Path, per_class: int = 5) -> tuple[Path, Path]:
    root = make_class_tree(tmp_path / "data", per_class=per_class)
    return root, Path(extract(open_dataset(root), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY).store)


def test_a_tampered_store_path_never_opens_a_file_outside_the_dataset(tmp_path):
    import h5py

    from featx.audit.search import search, write_gallery

    root, store = _tiny_store(tmp_path)
    secret = write_image(root.parent / "SECRET.png", 4242)
    with h5py.File(store, "r+") as f:
        f["samples/path"][0] = "../SECRET.png"
    result = search(store, [secret], k=10, device="cpu")
    assert any(h.path == "../SECRET.png" for h in result.hits)
    assert result.files.locate("../SECRET.png") == (None, "outside the dataset root")
    page = write_gallery(result, tmp_path / "g.html").read_text()
    assert page.count("<img") == 1 + 9 and "SECRET.png: outside the dataset root" in page


def test_an_audit_never_takes_pixels_from_a_file_that_is_not_the_sample(tmp_path, monkeypatch):
    from featx.audit import audit

    root, store = _tiny_store(tmp_path)
    replaced = root / "bees" / "bees_02.png"
    write_image(replaced, 777)  # same name, other bytes (another dataset's file of that name)
    notes = []
    result = audit(store, tmp_path / "audit", log=notes.append)
    assert result.summary["duplicates"]["pixels"] == "checked 9 of 10 images"
    assert any("sha256 differs" in n for n in notes)


def test_a_re_export_replaces_the_previous_export_as_a_whole(blob_store, tmp_path):
    import numpy as np
    import pyarrow.parquet as pq

    from featx.store.export import export

    out = tmp_path / "D"
    assert export(blob_store, out, shard_rows=7).shards > 3 and (out / "index.faiss").is_file()
    result = export(blob_store, out, index="none")
    assert result.shards == 1 and sorted(p.name for p in (out / "embeddings").iterdir()) == ["0000.npy"]
    assert not (out / "index.faiss").exists()
    assert len(pq.read_table(out / "metadata")) == result.rows == len(np.load(out / "embeddings" / "0000.npy"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["D", "blobs.h5"]  # nothing staged is left


@pytest.mark.parametrize("layout", ["class-folders", "unlabeled-folder"])
def test_a_same_size_rewrite_with_its_mtime_restored_is_seen(tmp_path, layout):
    root = make_class_tree(tmp_path / "data", per_class=4, ext=".bmp")  # BMP: same dims, same size
    if layout == "unlabeled-folder":
        for image in list(root.rglob("*.bmp")):
            image.rename(root / image.name)
        for folder in ("ants", "bees"):
            (root / folder).rmdir()
    first = extract(open_dataset(root), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY)
    target = next(root.rglob("*.bmp"))
    st = target.stat()
    write_image(target, 31337)  # `cp -p` of a regenerated file: other pixels, same size and mtime
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert target.stat().st_size == st.st_size
    again = extract(open_dataset(root), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY)
    assert again.status == "updated" and again.update.startswith("+0 new, 1 changed, 0 removed")
    assert first.store == again.store


def test_a_touch_only_update_keeps_the_store_version(tmp_path):
    from featx.store import read_attrs

    root = make_class_tree(tmp_path / "data", per_class=4)
    store = extract(open_dataset(root), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY).store
    for image in root.rglob("*.png"):
        os.utime(image, ns=(1_000_000_000, 1_000_000_000))
    touched = extract(open_dataset(root), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY)
    assert touched.update.startswith("+0 new, 0 changed, 0 removed, 8 kept") and touched.version == 1
    assert touched.same_data  # said as such, not "updated to version 1"
    attrs = read_attrs(Path(store))
    assert attrs["store_version"] == 1 and len(__import__("json").loads(attrs["history"])) == 1
    assert extract(open_dataset(root), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY).status == "complete"
    from typer.testing import CliRunner

    from featx.cli import app

    for image in root.rglob("*.png"):
        os.utime(image, ns=(2_000_000_000, 2_000_000_000))
    said = CliRunner().invoke(app, ["extract", str(root), "-b", "tiny_cnn", "--weights", "none", "--batch-size", "8",
                                    "--workers", "0", "--engine", "torch", "--out", str(tmp_path / "s")],
                              env={"COLUMNS": "400"})
    assert said.exit_code == 0, said.output
    # prose wraps at the width rich fixed when featx.cli was first imported: read it unwrapped
    text = " ".join(said.output.split())
    assert "tiny_cnn: only file times changed (+0 new, 0 changed, 0 removed, 8 kept); the store keeps version 1" \
        in text and "updated to version" not in text


@pytest.mark.parametrize("split", ["bogus", "validation", "Train", ""])
def test_a_split_that_does_not_exist_is_named_not_empty(blob_store, split):
    from featx.store import FeatureStore

    with FeatureStore(blob_store) as st, pytest.raises(StoreError, match=f"no split '{split}'; use one of train, val"):
        st.features(split)


@pytest.mark.parametrize("n_per_class, k, outlier_k", [(1, 10, 5), (1, 3, 2), (10, 1000, 50)])
def test_an_audit_of_few_samples_bounds_its_neighbours(tmp_path, n_per_class, k, outlier_k):
    from featx.audit import AuditConfig, audit
    from tests.conftest import make_feature_store

    store = make_feature_store(tmp_path / "s.h5", n_per_class=n_per_class, views=0)
    notes = []
    result = audit(store, tmp_path / "a", AuditConfig(k=k, outlier_k=outlier_k, pixels=False), log=notes.append)
    n = 3 * n_per_class
    assert result.summary["samples"] == n and result.summary["k"] == n - 1
    assert result.summary["outliers"]["k"] == min(outlier_k, n - 1)
    assert (tmp_path / "a" / "audit.json").is_file()
    assert any(f"{n} samples: neighbours searched k={n - 1}" in line for line in notes)


def test_a_one_class_audit_says_one_class(tmp_path):
    from featx.audit import audit
    from tests.conftest import make_feature_store

    store = make_feature_store(tmp_path / "s.h5", n_per_class=12, classes=("only",), views=0)
    notes = []
    result = audit(store, tmp_path / "a", log=notes.append)
    assert result.summary["labels"]["skipped"].startswith("one class only")


def test_a_store_temp_file_left_by_a_killed_update_is_swept(tmp_path):
    import subprocess
    import sys

    root = make_class_tree(tmp_path / "data", per_class=3)
    store = Path(extract(open_dataset(root), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY).store)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    leftover = store.with_name(f"{store.name}.tmp-{dead}")
    shutil.copy(store, leftover)  # the final write of an update, killed before its rename
    assert extract(open_dataset(root), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY).status == "complete"
    assert not leftover.exists()
