"""Issue 19, living stores: a dataset that grows or changes costs only its new images."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from featx.data import open_dataset
from featx.errors import StoreError
from featx.extraction import extract
from featx.store import FeatureStore, StoreLock
from tests.conftest import assert_same_store, make_class_tree, store_tables, write_image
from tests.test_extract import _run_killed

TINY = dict(weights="none", batch_size=8, views=2, aug="mild", workers=0, engine="torch")


def _assert_same_store(a: Path, b: Path) -> None:
    assert_same_store(a, b)


def _change(root: Path) -> None:
    """The issue's change: +10% new images, 2 changed, 3 removed, 5 relabelled (moved to another
    class folder), 4 moved into a subfolder of their own class."""
    for i in range(6):
        write_image(root / "abc"[i % 3] / f"new_{i}.png", 9000 + i)
    for name in ("a/a_01.png", "b/b_02.png"):
        write_image(root / name, 7000 + len(name), size=(36, 30))
    for name in ("a/a_03.png", "b/b_04.png", "c/c_05.png"):
        (root / name).unlink()
    for i, name in enumerate(("a/a_06.png", "a/a_07.png", "b/b_08.png", "c/c_09.png", "c/c_10.png")):
        (root / name).rename(root / "bca"["abc".index(name[0])] / f"relabelled_{i}.png")
    for name in ("a/a_11.png", "b/b_12.png", "c/c_13.png", "c/c_14.png"):
        (root / name[0] / "sub").mkdir(exist_ok=True)
        (root / name).rename(root / name[0] / "sub" / Path(name).name)


def test_an_updated_store_equals_a_fresh_extraction(tmp_path):
    root = make_class_tree(tmp_path / "data" / "cells", classes=("a", "b", "c"), per_class=20)
    first = extract(open_dataset(root), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY)
    assert first.status == "created" and first.version == 1
    _change(root)
    dataset = open_dataset(root)
    updated = extract(dataset, "tiny_cnn", tmp_path / "s", show_progress=False, **TINY)
    fresh = extract(dataset, "tiny_cnn", tmp_path / "fresh", show_progress=False, **TINY)
    assert updated.status == "updated" and updated.version == 2 and not updated.same_data
    # 55 old images remain: 50 keep their numbers, 5 moved training images get new views
    assert updated.update.startswith("+6 new, 2 changed, 3 removed, 50 kept (5 relabelled, 9 moved")
    assert "5 re-extracted for their views" in updated.update
    assert updated.images < fresh.images / 3  # only what is new, changed, or moved into views
    _assert_same_store(Path(updated.store), Path(fresh.store))  # features, views, labels, splits
    with FeatureStore(updated.store) as st:
        (v1, v2) = json.loads(st.attrs["history"])
        assert st.attrs["store_version"] == 2 and v1["samples"] == 60
        assert (v2["new"], v2["changed"], v2["removed"], v2["kept"], v2["computed"]) == (6, 2, 3, 50, 13)
    again = extract(open_dataset(root), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY)
    assert again.status == "complete" and again.images == 0


def test_a_copied_image_is_said_copied_not_moved(tmp_path):
    root = make_class_tree(tmp_path / "data" / "cells", classes=("a", "b"), per_class=6)
    extract(open_dataset(root), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY)
    shutil.copy(root / "a" / "a_01.png", root / "a" / "copy_of_a_01.png")  # the original stays
    shutil.move(root / "b" / "b_02.png", root / "b" / "renamed.png")
    updated = extract(open_dataset(root), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY)
    assert updated.update.startswith("+0 new, 0 changed, 0 removed, ") and "(1 moved, 1 copied" in updated.update
    assert updated.version == 2 and not updated.same_data  # a copy is one more sample: a new version
    with FeatureStore(updated.store) as st:
        assert json.loads(st.attrs["history"])[-1]["copied"] == 1 and len(st.paths) == 13
    from typer.testing import CliRunner

    from featx.cli import app

    info = CliRunner().invoke(app, ["info", updated.store], env={"COLUMNS": "200"}).output
    kept = updated.update.split(" kept")[0].rsplit(" ", 1)[1]  # the views decide how many rows are reused
    assert f"0 new, 0 changed, 0 removed, {kept} kept (1 moved, 1 copied)" in info  # what the version did


def test_duplicates_removed_or_moved_are_counted_as_such(tmp_path):
    root = make_class_tree(tmp_path / "data" / "cells", classes=("a", "b"), per_class=4)
    for name in ("twin_1.png", "twin_2.png", "twin_3.png"):
        shutil.copy(root / "a" / "a_00.png", root / "a" / name)  # four images of the same bytes
    extract(open_dataset(root), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY)
    (root / "a" / "twin_1.png").unlink()
    (root / "a" / "twin_2.png").rename(root / "a" / "twin_moved.png")
    updated = extract(open_dataset(root), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY)
    assert updated.update.startswith("+0 new, 0 changed, 1 removed, ") and "(1 moved" in updated.update
    assert "copied" not in updated.update and not updated.same_data and updated.version == 2
    # moved away, and new bytes written where it was: a move and a change, not a copy
    (root / "b" / "b_01.png").rename(root / "b" / "b_moved.png")
    write_image(root / "b" / "b_01.png", 31337)
    again = extract(open_dataset(root), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY)
    assert again.update.startswith("+0 new, 1 changed, 0 removed, ") and "(1 moved" in again.update
    assert "copied" not in again.update


def test_a_rename_is_undone_by_mapping_back_and_a_partial_map_keeps_the_rest(tmp_path):
    root = make_class_tree(tmp_path / "data" / "cells", classes=("a", "b"), per_class=4)
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"a": "Ant", "b": "Bee"}))
    store = extract(open_dataset(root, {"class_map": str(names)}), "tiny_cnn", tmp_path / "s",
                    show_progress=False, **TINY).store
    names.write_text(json.dumps({"a": "a"}))  # a back to its folder name; b left out: kept
    back = extract(open_dataset(root, {"class_map": str(names)}), "tiny_cnn", tmp_path / "s",
                   show_progress=False, **TINY)
    assert "(1 class renamed" in back.update
    with FeatureStore(store) as st:
        assert st.class_names == ["a", "Bee"]
    from typer.testing import CliRunner

    from featx.cli import app

    info = " ".join(CliRunner().invoke(app, ["info", store], env={"COLUMNS": "200"}).output.split())
    assert "8 kept (1 class renamed)" in info
    names.write_text(json.dumps({"b": "Apis"}))
    with pytest.raises(StoreError, match="class names --class-map gives differ from the store's"):
        extract(open_dataset(root, {"class_map": str(names)}), "tiny_cnn", tmp_path / "s",
                show_progress=False, update=False, **TINY)
    with FeatureStore(store) as st:
        assert st.class_names == ["a", "Bee"]  # --no-update changed nothing


def test_class_names_a_run_gives_rename_the_store_and_none_keeps_them(tmp_path, monkeypatch):
    import featx.extraction.runner

    root = make_class_tree(tmp_path / "data" / "cells", classes=("a", "b"), per_class=6)
    first_names, other_names = tmp_path / "first.json", tmp_path / "other.json"
    first_names.write_text(json.dumps({"a": "Ant", "b": "Bee"}))
    other_names.write_text(json.dumps({"a": "Formicidae", "b": "Apis"}))
    first = extract(open_dataset(root, {"class_map": str(first_names)}), "tiny_cnn", tmp_path / "s",
                    show_progress=False, **TINY)
    with monkeypatch.context() as m:
        m.setattr(featx.extraction.runner.Runner, "run", lambda *a, **k: pytest.fail("a rename forwards nothing"))
        renamed = extract(open_dataset(root, {"class_map": str(other_names)}), "tiny_cnn", tmp_path / "s",
                          show_progress=False, **TINY)
    assert renamed.status == "updated" and renamed.version == 2 and renamed.images == 0
    assert renamed.update.startswith("+0 new, 0 changed, 0 removed, 12 kept (2 classes renamed")
    with FeatureStore(first.store) as st:
        assert st.class_names == ["Formicidae", "Apis"] and st.classes == ["a", "b"]
    write_image(root / "a" / "new.png", 4242)  # a later run without --class-map, with a new image
    grown = extract(open_dataset(root), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY)
    assert grown.update.startswith("+1 new") and "renamed" not in grown.update
    with FeatureStore(first.store) as st:
        assert st.class_names == ["Formicidae", "Apis"]  # kept, not dropped back to the folder names
    again = extract(open_dataset(root, {"class_map": str(other_names)}), "tiny_cnn", tmp_path / "s",
                    show_progress=False, **TINY)
    assert again.status == "complete"  # the names it gives are the store's already


def test_a_copied_dataset_costs_no_forward(tmp_path, monkeypatch):
    """cp -r gives every file a new mtime and the dataset a new root: the bytes are the same."""
    root = make_class_tree(tmp_path / "data" / "cells", classes=("a", "b"), per_class=10)
    first = extract(open_dataset(root), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY)
    before = store_tables(Path(first.store))
    copy = tmp_path / "elsewhere" / "cells"
    shutil.copytree(root, copy, copy_function=shutil.copy)  # new mtimes, as `cp -r`
    assert (copy / "a" / "a_00.png").stat().st_mtime_ns != (root / "a" / "a_00.png").stat().st_mtime_ns
    import featx.extraction.runner

    def no_forward(*args, **kwargs):
        raise AssertionError("a backbone forward ran")

    monkeypatch.setattr(featx.extraction.runner.Runner, "run", no_forward)
    moved = extract(open_dataset(copy), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY)
    assert moved.status == "updated" and moved.images == 0
    assert moved.update.startswith("+0 new, 0 changed, 0 removed, 20 kept")
    after = store_tables(Path(moved.store))
    for name in before:
        if name != "samples/mtime_ns":
            np.testing.assert_array_equal(before[name], after[name], err_msg=name)
    with FeatureStore(moved.store) as st:
        assert st.attrs["dataset_root"] == str(copy)
        assert [v["dataset_root"] for v in json.loads(st.attrs["history"])] == [str(root), str(copy)]
    from typer.testing import CliRunner

    from featx.cli import app

    info = CliRunner().invoke(app, ["info", moved.store], env={"COLUMNS": "200"}).output
    assert "version    2, updated" in info and "0 new, 0 changed, 0 removed, 20 kept" in info
    assert f"the dataset is at {copy} now, {root} then" in info


def test_a_moved_dataset_is_recorded_where_it_is_now(tmp_path):
    """`mv` keeps every mtime: nothing is hashed, nothing forwarded; the store learns the root."""
    root = make_class_tree(tmp_path / "old" / "cells", classes=("a", "b"), per_class=6)
    first = extract(open_dataset(root), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY)
    (tmp_path / "new").mkdir()
    moved = root.rename(tmp_path / "new" / "cells")
    r = extract(open_dataset(moved), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY)
    assert r.status == "updated" and r.images == 0
    assert r.update.startswith("+0 new, 0 changed, 0 removed, 12 kept")
    with FeatureStore(r.store) as st:
        assert st.attrs["dataset_root"] == str(moved) and st.attrs["store_version"] == 2
    again = extract(open_dataset(moved), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY)
    assert again.status == "complete"
    assert first.store == r.store


def test_labels_and_splits_change_without_a_forward(tmp_path, monkeypatch):
    """A CSV label edited, a class added, a split column changed: only the tables change."""
    for i in range(12):
        write_image(tmp_path / "img" / f"{i:02d}.png", i)
    rows = [f"img/{i:02d}.png,{'cat' if i % 2 else 'dog'},{'train' if i < 8 else 'test'}" for i in range(12)]
    manifest = tmp_path / "labels.csv"
    manifest.write_text("path,label,split\n" + "\n".join(rows) + "\n")
    first = extract(open_dataset(manifest), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY)
    rows[3] = "img/03.png,bird,train"  # relabelled, a new class
    rows[9] = "img/09.png,cat,val"  # another split (not train: no views needed)
    manifest.write_text("path,label,split\n" + "\n".join(rows) + "\n")
    import featx.extraction.runner

    monkeypatch.setattr(featx.extraction.runner.Runner, "run", lambda *a, **k: pytest.fail("forward"))
    r = extract(open_dataset(manifest), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY)
    assert r.status == "updated" and r.images == 0 and "1 relabelled" in r.update
    with FeatureStore(r.store) as st, FeatureStore(first.store) as old:
        assert st.classes == ["bird", "cat", "dog"] and st.classes[st.labels[3]] == "bird"
        assert st.splits[9] == "val"
        np.testing.assert_array_equal(st.read_clean(), old.read_clean())


def test_a_store_with_a_class_named_unlabeled_updates_to_unlabelled_rows_with_no_forward(tmp_path, monkeypatch):
    """A store made before featx read `unlabeled/` as unlabelled images had a class 'unlabeled':
    its update relabels those rows (the class gone, said in one line), forwards nothing, and
    equals a fresh extraction of the dataset as featx reads it now."""
    import featx.data.folders
    import featx.extraction.runner

    root = make_class_tree(tmp_path / "data" / "cells", classes=("a", "unlabeled", "zebras"), per_class=8)
    with monkeypatch.context() as old_featx:
        old_featx.setattr(featx.data.folders, "UNLABELED_FOLDERS", ())
        first = extract(open_dataset(root), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY)
    with FeatureStore(first.store) as st:
        assert st.classes == ["a", "unlabeled", "zebras"] and (st.labels >= 0).all()
    dataset = open_dataset(root)
    with monkeypatch.context() as no_forward:
        no_forward.setattr(featx.extraction.runner.Runner, "run", lambda *a, **k: pytest.fail("forward"))
        r = extract(dataset, "tiny_cnn", tmp_path / "s", show_progress=False, **TINY)
    assert r.status == "updated" and r.images == 0 and r.version == 2
    assert r.update.startswith("+0 new, 0 changed, 0 removed, 24 kept (8 relabelled")
    assert r.update.endswith("; class 'unlabeled' is gone: its 8 image(s) are unlabelled now (a folder "
                             "named unlabeled holds unlabelled images, not a class; rename the folder to "
                             "keep the class)")
    with FeatureStore(r.store) as st:
        names = {p: st.classes[y] if y >= 0 else "" for p, y in zip(st.paths, st.labels)}
        assert st.classes == ["a", "zebras"] and names["zebras/zebras_00.png"] == "zebras"
        assert {s for p, s in zip(st.paths, st.splits) if p.startswith("unlabeled/")} == {"unlabeled"}
    fresh = extract(dataset, "tiny_cnn", tmp_path / "fresh", show_progress=False, **TINY)
    _assert_same_store(Path(r.store), Path(fresh.store))  # views of the old class's train rows gone


def test_a_loose_folder_sorted_into_unlabeled_and_class_folders_is_an_update(tmp_path, monkeypatch):
    """To start labelling a folder of loose images: move them all into unlabeled/ and the picks
    into class folders; the store follows with no forward. A subfolder made beside loose images
    that stay (they would be ignored, their rows deleted) is refused in one line."""
    import featx.extraction.runner

    root = tmp_path / "pool"
    clean = dict(TINY, views=0)  # with views, a pick that lands in train is forwarded for them
    for i in range(10):
        write_image(root / f"{i:02d}.png", 400 + i)
    first = extract(open_dataset(root), "tiny_cnn", tmp_path / "s", show_progress=False, **clean)
    write_image(root / "backup" / "x.png", 499)
    with pytest.raises(StoreError, match="read as class-folders now, the store holds unlabeled-folder "
                                         r"\(to label a folder of loose images, move every one into unlabeled/"):
        extract(open_dataset(root), "tiny_cnn", tmp_path / "s", show_progress=False, **clean)
    shutil.rmtree(root / "backup")
    for i in range(10):
        folder = root / ("cat" if i < 3 else "unlabeled")
        folder.mkdir(exist_ok=True)
        (root / f"{i:02d}.png").rename(folder / f"{i:02d}.png")
    dataset = open_dataset(root)
    monkeypatch.setattr(featx.extraction.runner.Runner, "run", lambda *a, **k: pytest.fail("forward"))
    r = extract(dataset, "tiny_cnn", tmp_path / "s", show_progress=False, **clean)
    assert r.status == "updated" and r.images == 0 and r.store == first.store
    assert r.update.startswith("+0 new, 0 changed, 0 removed, 10 kept (3 relabelled, 10 moved")
    with FeatureStore(r.store) as st:
        assert st.attrs["dataset_layout"] == "class-folders" and st.classes == ["cat"]
        assert sorted(p for p, y in zip(st.paths, st.labels) if y >= 0) == ["cat/00.png", "cat/01.png", "cat/02.png"]


def test_a_grown_auto_split_dataset_keeps_every_old_split_in_the_store(tmp_path):
    root = make_class_tree(tmp_path / "cells", classes=("a", "b"), per_class=20)
    first = extract(open_dataset(root), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY)
    with FeatureStore(first.store) as st:
        before = dict(zip(st.paths, st.splits))
    for i in range(8):  # +20%
        write_image(root / "ab"[i % 2] / f"more_{i}.png", 5000 + i)
    r = extract(open_dataset(root), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY)
    assert r.status == "updated" and r.update.startswith("+8 new")
    with FeatureStore(r.store) as st:
        after = dict(zip(st.paths, st.splits))
    assert all(after[p] == split for p, split in before.items())


def test_a_file_that_became_unreadable_loses_its_old_features(tmp_path):
    root = make_class_tree(tmp_path / "cells", classes=("a", "b"), per_class=6)
    extract(open_dataset(root), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY)
    (root / "a" / "a_02.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    r = extract(open_dataset(root), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY)
    assert r.status == "updated" and r.failed == 1
    with FeatureStore(r.store) as st:
        row = list(st.paths).index("a/a_02.png")
        assert row in st.failed and row not in st.rows()
        assert not st.read_clean([row]).any()  # the old numbers are gone, not kept as current


def test_an_image_changed_while_being_read_is_a_failed_row(tmp_path, monkeypatch):
    root = make_class_tree(tmp_path / "cells", classes=("a", "b"), per_class=4)
    dataset = open_dataset(root)
    import featx.extraction.decode as decode

    real = decode.load_image

    def rewritten_meanwhile(path):
        img = real(path)
        if Path(path).name == "b_01.png":
            write_image(Path(path), 99, size=(44, 32))
        return img

    monkeypatch.setattr(decode, "load_image", rewritten_meanwhile)
    r = extract(dataset, "tiny_cnn", tmp_path / "s", show_progress=False, **TINY)
    with FeatureStore(r.store) as st:
        reasons = {st.paths[row]: why for row, why in st.failed.items()}
    assert list(reasons) == ["b/b_01.png"] and "changed while being read" in reasons["b/b_01.png"]
    monkeypatch.setattr(decode, "load_image", real)
    again = extract(open_dataset(root), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY)
    assert again.status == "updated" and again.failed == 0  # the new version, extracted


def test_a_store_without_content_hashes_is_hashed_at_its_first_update(tmp_path):
    root = make_class_tree(tmp_path / "cells", classes=("a", "b"), per_class=8)
    first = extract(open_dataset(root), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY)
    with h5py.File(first.store, "r+") as f:  # as featx wrote stores before issue 19
        del f["samples/sha256"]
        del f.attrs["history"], f.attrs["store_version"]
    write_image(root / "a" / "extra.png", 4242)
    r = extract(open_dataset(root), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY)
    assert r.status == "updated" and r.update.startswith("+1 new, 0 changed, 0 removed, 16 kept")
    fresh = extract(open_dataset(root), "tiny_cnn", tmp_path / "f", show_progress=False, **TINY)
    _assert_same_store(Path(r.store), Path(fresh.store))


def test_no_update_refuses_and_other_settings_still_refuse(tmp_path):
    root = make_class_tree(tmp_path / "cells", classes=("a", "b"), per_class=6)
    extract(open_dataset(root), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY)
    write_image(root / "a" / "extra.png", 4242)
    with pytest.raises(StoreError, match="the dataset changed: 1 added"):
        extract(open_dataset(root), "tiny_cnn", tmp_path / "s", show_progress=False,
                **{**TINY, "update": False})
    with pytest.raises(StoreError, match="engine is torch in the store, onnxruntime requested"):
        extract(open_dataset(root), "tiny_cnn", tmp_path / "s", show_progress=False,
                **{**TINY, "engine": "onnxruntime"})
    (store,) = (tmp_path / "s").glob("*.h5")
    with StoreLock(store), pytest.raises(StoreError, match="already being written"):
        extract(open_dataset(root), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY)


def _command(data: Path, out: Path) -> list[str]:
    """`featx extract`'s arguments (after `featx`)."""
    return ["extract", str(data), "-b", "tiny_cnn", "--engine", "torch", "--weights", "none",
            "--input-size", "48", "--batch-size", "2", "--views", "1", "--workers", "0", "--out", str(out)]


KILLED = dict(engine="torch", weights="none", input_size=48, batch_size=2, views=1, workers=0)  # _command's


@pytest.mark.slow
def test_an_update_killed_midway_resumes_to_the_same_store(tmp_path, one_thread):
    root = make_class_tree(tmp_path / "data" / "cells", classes=("a", "b"), per_class=12, seed=3)
    for out in ("killed", "calm"):
        done = extract(open_dataset(root), "tiny_cnn", tmp_path / out, show_progress=False, **KILLED)
        assert done.status == "created"
    _change_two_classes(root)
    # SIGKILLed between the two flushes of the delta store's second batch (tests/kill_point.py)
    # (in a process forked from this one: test_extract._run_killed says why)
    _run_killed(_command(root, tmp_path / "killed"), 2, "rows", tmp_path / "killed.log")
    (delta,) = (tmp_path / "killed").glob("*.delta.h5")
    with h5py.File(delta, "r") as f:
        assert 0 < f["done/clean"][:].sum() < len(f["done/clean"])
    (store,) = (tmp_path / "killed").glob("*[!a].h5")
    with FeatureStore(store) as st:  # the old store, intact until the rename
        assert st.complete and st.attrs.get("store_version") == 1
    resumed = extract(open_dataset(root), "tiny_cnn", tmp_path / "killed", show_progress=False, **KILLED)
    assert resumed.status == "updated" and Path(resumed.store) == store
    calm = extract(open_dataset(root), "tiny_cnn", tmp_path / "calm", show_progress=False, **KILLED)
    assert calm.status == "updated"
    _assert_same_store(store, Path(calm.store))
    fresh = extract(open_dataset(root), "tiny_cnn", tmp_path / "fresh", show_progress=False, **KILLED)
    assert fresh.status == "created"
    _assert_same_store(store, Path(fresh.store))
    assert not list((tmp_path / "killed").glob("*.delta.h5*"))


def _change_two_classes(root: Path) -> None:
    for i in range(6):
        write_image(root / "ab"[i % 2] / f"new_{i}.png", 9000 + i)
    write_image(root / "a" / "a_01.png", 7001, size=(36, 30))
    (root / "b" / "b_03.png").unlink()
    (root / "a" / "a_05.png").rename(root / "b" / "moved.png")


def _merged_store(root: Path, out: Path) -> Path:
    """What `torchrun --nproc-per-node 2 -m featx extract` (test_distributed._extract's settings)
    leaves in `out`: both shards, merged by merge_shards and removed, as its rank 0 does
    (featx.extraction.sharded). Made in this process (torch and ONNX Runtime on one thread, as in
    torchrun's ranks): the update under torchrun is the behaviour under test, not the first run."""
    from featx.extraction import ExtractConfig, extract_shard
    from featx.store import merge_shards

    dataset = open_dataset(root, {"val_frac": 0.25, "test_frac": 0.25})
    config = ExtractConfig(views=2, batch_size=4, workers=0, weights="none", input_size=32)
    shards = [Path(extract_shard(dataset, "tiny_cnn", out, rank, 2, config, show_progress=False).store)
              for rank in range(2)]
    store = shards[0].with_name(shards[0].name.replace(".shard000-of-002", ""))
    merge_shards(shards, store)
    for shard in shards:
        shard.unlink()
        Path(f"{shard}.lock").unlink(missing_ok=True)
    return store


@pytest.mark.slow
def test_a_torchrun_update_shares_only_the_new_rows(tmp_path):
    from tests.test_distributed import _extract, _run, _single
    from tests.tiny_backbone import subprocess_env

    env = subprocess_env({**os.environ, "OMP_NUM_THREADS": "1"})
    root = make_class_tree(tmp_path / "data" / "cells", classes=("a", "b"), per_class=10, seed=4)
    store = _merged_store(root, tmp_path / "multi")
    with FeatureStore(store) as st:
        assert st.complete and st.attrs.get("world_size") == 2
    _change_two_classes(root)
    updated = _run(_extract(root, tmp_path / "multi", 2, env), env)
    assert updated.stdout.count("updated") == 1 and "+6 new, 1 changed, 1 removed" in updated.stdout
    import re

    forwarded = int(re.search(r";\s+(\d+) images?\s+forwarded", updated.stdout).group(1))  # prose wraps at words
    assert 0 < forwarded <= 3 * 8  # 6 new, 1 changed, 1 moved: a clean view and 2 views at most
    assert list((tmp_path / "multi").glob("*.h5")) == [store]
    _assert_same_store(store, _single(root, tmp_path / "single"))  # a fresh one-process extraction
    assert not list((tmp_path / "multi").glob("*delta*")) and not list((tmp_path / "multi").glob("*shard*"))


def test_heads_know_the_store_version_they_were_trained_on(tmp_path, capsys):
    from featx import predict
    from featx.report.results import read_results
    from featx.probes.train import train_head

    root = make_class_tree(tmp_path / "cells", classes=("a", "b"), per_class=16)
    first = extract(open_dataset(root), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY)
    (tmp_path / "heads").mkdir()
    (tmp_path / "heads2").mkdir()
    head = train_head(first.store, "linear", out=tmp_path / "heads", show_progress=False)
    assert head.meta["store_version"] == 1
    assert read_results(tmp_path / "heads").stale == []
    for i in range(6):
        write_image(root / "ab"[i % 2] / f"new_{i}.png", 3000 + i)
    updated = extract(open_dataset(root), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY)
    with FeatureStore(updated.store) as st:
        new_train = json.loads(st.attrs["history"])[-1]["train_new"]
    assert new_train > 0
    capsys.readouterr()
    predict(head, updated.store)
    note = f"trained on version 1; the store is at version 2, with {new_train} new training images since"
    assert note in capsys.readouterr().err
    (stale,) = read_results(tmp_path / "heads").stale
    assert note in stale[1]
    retrained = train_head(updated.store, "linear", out=tmp_path / "heads2", show_progress=False)
    assert retrained.meta["store_version"] == 2
    assert retrained.meta["train_samples"] > head.meta["train_samples"]  # trained on everything


def test_cut_maps_are_updated_like_features(tmp_path):
    """extract --cut: the maps of kept rows are copied bit for bit, new ones computed."""
    from featx.backbones import create_backbone
    from featx.backbones.cuts import trunk_for

    block = trunk_for(create_backbone("tiny_features", None, 0).model).default_pool
    options = {**TINY, "cut": block}
    root = make_class_tree(tmp_path / "data" / "cells", classes=("a", "b"), per_class=10)
    extract(open_dataset(root), "tiny_features", tmp_path / "s", show_progress=False, **options)
    _change_two_classes(root)
    updated = extract(open_dataset(root), "tiny_features", tmp_path / "s", show_progress=False, **options)
    fresh = extract(open_dataset(root), "tiny_features", tmp_path / "f", show_progress=False, **options)
    assert updated.status == "updated" and updated.images < fresh.images / 2
    assert {f"cut/{block}/clean", f"cut/{block}/aug"} <= set(store_tables(Path(updated.store)))
    _assert_same_store(Path(updated.store), Path(fresh.store))


def test_any_row_table_is_carried_and_one_that_cannot_be_computed_is_refused(tmp_path):
    """Tables featx does not lay out itself (another version's columns) follow their rows."""
    for i in range(8):
        write_image(tmp_path / "img" / f"{i}.png", i)
    manifest = tmp_path / "labels.csv"
    manifest.write_text("".join(f"img/{i}.png,{'xy'[i % 2]},train\n" for i in range(8)))
    first = extract(open_dataset(manifest), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY)
    with h5py.File(first.store, "r+") as f:
        f.create_dataset("features/extra", data=np.arange(16, dtype=np.float32).reshape(8, 2))
    manifest.write_text("".join(f"img/{i}.png,{'yx'[i % 2]},train\n" for i in range(8)))  # relabel
    relabelled = extract(open_dataset(manifest), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY)
    with h5py.File(relabelled.store, "r") as f:
        np.testing.assert_array_equal(f["features/extra"][()], np.arange(16).reshape(8, 2))
    write_image(tmp_path / "img" / "8.png", 8)
    manifest.write_text(manifest.read_text() + "img/8.png,x,train\n")
    with pytest.raises(StoreError, match="features/extra: a table of the store that this featx does not"):
        extract(open_dataset(manifest), "tiny_cnn", tmp_path / "s", show_progress=False, **TINY)
