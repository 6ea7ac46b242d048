"""featx.data: four layouts -> one ordered sample list, with classes and a fingerprint."""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest

from featx.data import DatasetOptions, list_images, open_dataset, read_class_map, scan_images, subset
from featx.errors import ConfigError, DataError
from tests.conftest import make_class_tree, write_image


def test_split_folders(split_tree):
    ds = open_dataset(split_tree)
    assert ds.layout == "split-folders" and ds.classes == ["ants", "bees"]
    assert Counter(s.split for s in ds.samples) == {"train": 8, "val": 4}
    assert ds.samples[0].path == "train/ants/ants_00.png"
    assert [s.path for s in ds.samples] == sorted(s.path for s in ds.samples)


def test_class_folders_get_a_seeded_split_that_follows_each_image(tmp_path):
    root = make_class_tree(tmp_path / "malaria", classes=("parasitized", "uninfected"), per_class=10)
    opts = DatasetOptions(val_frac=0.2, test_frac=0.1, split_seed=1)
    ds = open_dataset(root, opts)
    assert ds.layout == "class-folders"
    assert all(len(s.sha256) == 64 for s in ds.samples)  # an auto-split hashes every image
    assert {s.split for s in ds.samples} <= {"train", "val", "test"}
    assert all(ds.counts()["train"][c] for c in ds.classes)
    again = open_dataset(root, opts)
    assert [s.split for s in again.samples] == [s.split for s in ds.samples]
    other = open_dataset(root, DatasetOptions(val_frac=0.2, test_frac=0.1, split_seed=2))
    assert [s.split for s in other.samples] != [s.split for s in ds.samples]


def test_identity_splits_are_stratified_in_expectation():
    """u = hash(seed, content) -> [0, 1): each class gets its fractions up to sampling noise."""
    import hashlib

    from featx.data import identity_split

    shas = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(20000)]
    labels = [i % 4 for i in range(20000)]
    splits = identity_split(shas, labels, DatasetOptions(val_frac=0.15, test_frac=0.25))
    for y in range(4):
        got = Counter(s for s, label in zip(splits, labels) if label == y)
        for split, frac in (("test", 0.25), ("val", 0.15), ("train", 0.6)):
            assert abs(got[split] / 5000 - frac) < 0.025, (y, split, got)


def test_a_grown_dataset_moves_no_old_sample_to_another_split(tmp_path):
    """Issue 19: adding 20% new images, removing some, relabelling one, copying the folder:
    every old image keeps its split (no image tested on in one version is trained on later)."""
    root = make_class_tree(tmp_path / "data" / "cells", classes=("a", "b", "c"), per_class=20)
    before = {s.sha256: s.split for s in open_dataset(root).samples}
    for i in range(12):  # 20% new images
        write_image(root / "abc"[i % 3] / f"new_{i:02d}.png", 5000 + i)
    (root / "b" / "b_05.png").unlink()
    (root / "c" / "c_07.png").rename(root / "a" / "c_07_moved.png")
    (root / "d").mkdir()
    (root / "c" / "c_08.png").rename(root / "d" / "c_08.png")  # a new class
    after = open_dataset(root)
    assert len(after.samples) == 60 + 12 - 1
    kept = [s for s in after.samples if s.sha256 in before]
    assert len(kept) == 59 and all(s.split == before[s.sha256] for s in kept)
    copy = tmp_path / "copy" / "cells"
    import shutil

    shutil.copytree(root, copy)
    assert [s.split for s in open_dataset(copy).samples] == [s.split for s in after.samples]


def test_a_tiny_class_keeps_a_training_image():
    from featx.data import identity_split

    for seed in range(20):
        shas = [f"{seed}-{i}" for i in range(3)]
        splits = identity_split(shas, [0, 0, 0], DatasetOptions(val_frac=0.3, test_frac=0.6))
        assert "train" in splits


def test_csv_manifest_with_header_label_and_split_columns(tmp_path):
    for i in range(4):
        write_image(tmp_path / "img" / f"{i}.png", i)
    (tmp_path / "m.csv").write_text(
        "file,kind,quality,split\n"
        "img/0.png,cat,good,train\nimg/1.png,dog,bad,train\nimg/2.png,cat,bad,test\n"
        "img/3.png,dog,good,val\n")
    ds = open_dataset(tmp_path / "m.csv", DatasetOptions(label_col="quality"))
    assert ds.classes == ["bad", "good"]
    assert [(s.path, ds.classes[s.label], s.split) for s in ds.samples] == [
        ("img/0.png", "good", "train"), ("img/1.png", "bad", "train"),
        ("img/2.png", "bad", "test"), ("img/3.png", "good", "val")]


def test_manifest_names_missing_files_and_bad_splits(tmp_path):
    write_image(tmp_path / "a.png", 0)
    (tmp_path / "m.csv").write_text("path,label\na.png,x\ngone.png,y\n")
    ds = open_dataset(tmp_path / "m.csv")
    assert ds.skipped == [("gone.png", "file not found")]
    (tmp_path / "s.csv").write_text("path,label,split\na.png,x,holdout\n")
    with pytest.raises(DataError, match=r"s.csv:2: unknown split 'holdout'"):
        open_dataset(tmp_path / "s.csv")


def test_elpv_labels_csv_as_shipped():
    ds = open_dataset("elpv")
    assert ds.name == "elpv" and len(ds.samples) == 2624
    assert [float(c) for c in ds.classes] == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert Counter(ds.classes[s.label] for s in ds.samples)["1.0"] == 715
    # The published protocol holds out 25% for test, stratified. Splits follow each image's
    # content (issue 19), so the fractions hold in expectation (tested on 20,000 draws above);
    # with split seed 0, ELPV's test split is 704 of 2,624 (26.8%), per class:
    tested = Counter(ds.classes[s.label] for s in ds.samples if s.split == "test")
    assert tested == {"0.0": 391, "0.3333333333333333": 72, "0.6666666666666666": 26, "1.0": 215}


def test_elpv_binarized_is_defective_vs_functional():
    ds = open_dataset("elpv", DatasetOptions(binarize=0.5))
    assert ds.display_names == ["functional", "defective"]
    counts = Counter(ds.classes[s.label] for s in ds.samples)
    assert counts == {"<=0.5": 1508 + 295, ">0.5": 106 + 715}


def test_unlabeled_folder(tmp_path):
    for i in range(3):
        write_image(tmp_path / "test" / f"{i}.jpg", i)
    ds = open_dataset(tmp_path / "test")
    assert ds.layout == "unlabeled-folder" and ds.classes == []
    assert {(s.label, s.split) for s in ds.samples} == {(-1, "unlabeled")}


@pytest.mark.parametrize("pool", ["unlabeled", "Unlabelled", "UNLABELED"])
def test_an_unlabeled_folder_beside_class_folders_holds_unlabelled_images_not_a_class(class_tree, pool):
    for i in range(3):
        write_image(class_tree / pool / ("deep" if i else "") / f"u{i}.png", 300 + i)
    ds = open_dataset(class_tree)
    assert ds.layout == "class-folders" and ds.classes == ["ants", "bees"] and len(ds.samples) == 15
    unlabelled = sorted(s.path for s in ds.samples if s.label == -1)
    assert unlabelled == [f"{pool}/deep/u1.png", f"{pool}/deep/u2.png", f"{pool}/u0.png"]
    assert all(s.split == "unlabeled" for s in ds.samples if s.label == -1)
    assert all(s.split != "unlabeled" for s in ds.samples if s.label >= 0)
    assert f"folder '{pool}': 3 unlabelled image(s), not a class" in " ".join(ds.notes)


def test_an_unlabeled_folder_alone_is_a_dataset_with_no_classes_yet(tmp_path):
    for i in range(3):
        write_image(tmp_path / "new" / "unlabeled" / f"u{i}.png", 310 + i)
    write_image(tmp_path / "new" / "loose.png", 320)
    ds = open_dataset(tmp_path / "new")
    assert ds.layout == "class-folders" and ds.classes == [] and len(ds.samples) == 3
    assert {(s.label, s.split) for s in ds.samples} == {(-1, "unlabeled")}
    assert any("1 image(s) at the top level" in n and "unlabeled/" in n for n in ds.notes)


def test_split_folders_read_unlabeled_beside_the_splits_and_in_place_of_a_class(split_tree):
    write_image(split_tree / "unlabeled" / "u0.png", 330)
    write_image(split_tree / "train" / "Unlabelled" / "t0.png", 331)
    ds = open_dataset(split_tree)
    assert ds.layout == "split-folders" and ds.classes == ["ants", "bees"]
    assert sorted((s.path, s.label, s.split) for s in ds.samples if s.label < 0) == [
        ("train/Unlabelled/t0.png", -1, "unlabeled"), ("unlabeled/u0.png", -1, "unlabeled")]
    notes = " ".join(ds.notes)
    assert "folder 'unlabeled': 1 unlabelled image(s)" in notes and "'train/Unlabelled'" in notes
    assert "is not a split" not in notes


def test_class_map_gives_display_names(class_tree, tmp_path):
    (tmp_path / "cat_to_name.json").write_text(json.dumps({"ants": "formicidae"}))
    ds = open_dataset(class_tree, DatasetOptions(class_map=str(tmp_path / "cat_to_name.json")))
    assert ds.classes == ["ants", "bees"] and ds.display_names == ["formicidae", "bees"]


@pytest.mark.parametrize("text,problem", [("{not json", "cannot read class map"),
                                          ('["ants"]', "must be a JSON object"),
                                          (None, "cannot read class map")])
def test_bad_class_map_is_a_one_line_error(tmp_path, text, problem):
    path = tmp_path / "map.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(DataError, match=problem) as info:
        read_class_map(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_list_images_gathers_files_and_folders_for_prediction(class_tree, tmp_path):
    ds, skipped = list_images([class_tree / "ants", class_tree / "bees" / "bees_00.png",
                               tmp_path / "missing.png"])
    assert len(ds.samples) == 7 and all(s.label == -1 and s.split == "unlabeled" for s in ds.samples)
    assert ds.root == class_tree.resolve() and skipped == [(str(tmp_path / "missing.png"),
                                                            "no such file or folder")]


def test_hidden_files_empty_classes_and_non_images_are_handled(class_tree):
    (class_tree / ".DS_Store").write_bytes(b"\0")
    (class_tree / "ants" / "._ants_00.png").write_bytes(b"\0")
    (class_tree / ".git").mkdir()
    write_image(class_tree / ".git" / "x.png", 1)
    (class_tree / "wasps").mkdir()
    (class_tree / "bees" / "README.txt").write_text("notes")
    ds = open_dataset(class_tree)
    assert ds.classes == ["ants", "bees"] and len(ds.samples) == 12
    assert any("empty class folder 'wasps'" in n for n in ds.notes)
    assert ds.ignored_files == 1


def test_symlinks_followed_once_and_broken_links_reported(class_tree, tmp_path):
    os.symlink(class_tree / "ants", class_tree / "ants" / "loop")  # a loop must not hang
    os.symlink(tmp_path / "nowhere.png", class_tree / "bees" / "dangling.png")
    extra = write_image(tmp_path / "elsewhere" / "far.png", 9)
    os.symlink(extra, class_tree / "bees" / "linked.png")
    ds = open_dataset(class_tree)
    paths = [s.path for s in ds.samples]
    assert "bees/linked.png" in paths and len(paths) == 13
    assert ds.skipped == [(str(class_tree / "bees" / "dangling.png"), "broken symlink")]


def test_non_utf8_file_name_is_reported(class_tree):
    name = os.fsencode(class_tree / "ants") + b"/caf\xe9.png"
    with open(name, "wb") as f:
        f.write((class_tree / "ants" / "ants_00.png").read_bytes())
    ds = open_dataset(class_tree)
    assert len(ds.samples) == 12
    assert [reason for _, reason in ds.skipped] == ["file name is not valid UTF-8"]


def test_fingerprint_changes_when_a_file_is_added_removed_or_changed(class_tree):
    base = open_dataset(class_tree).fingerprint
    assert open_dataset(class_tree).fingerprint == base
    extra = write_image(class_tree / "ants" / "new.png", 77)
    added = open_dataset(class_tree).fingerprint
    extra.unlink()
    assert open_dataset(class_tree).fingerprint == base
    (class_tree / "bees" / "bees_00.png").unlink()
    removed = open_dataset(class_tree).fingerprint
    write_image(class_tree / "bees" / "bees_00.png", 5, size=(41, 32))
    changed = open_dataset(class_tree).fingerprint
    assert len({base, added, removed, changed}) == 4


def test_subset_is_stratified_and_named(class_tree):
    ds = open_dataset(class_tree, DatasetOptions(val_frac=0.0, test_frac=0.5))
    small = subset(ds, 6, seed=0)
    assert small.name == "cells-sub6" and len(small.samples) == 6
    assert Counter(s.label for s in small.samples) == {0: 3, 1: 3}
    assert small.fingerprint != ds.fingerprint


def test_scan_reports_every_unreadable_file_and_goes_on(class_tree):
    (class_tree / "ants" / "empty.png").write_bytes(b"")
    (class_tree / "bees" / "fake.jpg").write_text("not a jpeg")
    write_image(class_tree / "bees" / "gray.png", 3, mode="L")
    ds = open_dataset(class_tree)
    report = scan_images(ds)
    assert sorted(report.unreadable) == [("ants/empty.png", "empty file (0 bytes)"),
                                         ("bees/fake.jpg", "not an image file Pillow can identify")]
    assert report.modes == {"RGB": 12, "L": 1} and report.sizes == {(40, 32): 13}


def test_bad_options_and_missing_data_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="val_frac \\+ test_frac"):
        DatasetOptions(val_frac=0.5, test_frac=0.5)
    with pytest.raises(DataError, match="no such file or folder"):
        open_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        open_dataset(tmp_path / "empty")


def test_symlink_loop_across_class_folders_does_not_relabel(split_tree):
    """Issue 17.2: train/ants/up -> .. reached train/bees again as train/ants/up/bees/* (label ants)."""
    os.symlink("..", split_tree / "train" / "ants" / "up")
    os.symlink("../..", split_tree / "val" / "bees" / "top")  # the dataset root, from a class
    ds = open_dataset(split_tree)
    assert len(ds.samples) == 12 and not any("/up/" in s.path or "/top/" in s.path for s in ds.samples)
    labels = {s.path: ds.classes[s.label] for s in ds.samples}
    assert all(path.split("/")[1] == label for path, label in labels.items())
    assert any("train/ants/up" in n and "skipped" in n for n in ds.notes)


def test_a_folder_linked_from_two_classes_is_read_once_by_its_own_class(class_tree):
    (class_tree / "bees" / "more").mkdir()
    write_image(class_tree / "bees" / "more" / "m.png", 41)
    os.symlink(class_tree / "bees" / "more", class_tree / "ants" / "borrowed")  # walked first
    os.symlink(class_tree / "bees", class_tree / "wasps")  # a class folder that is another one
    ds = open_dataset(class_tree)
    assert ds.classes == ["ants", "bees"] and len(ds.samples) == 13
    assert {s.path: s.label for s in ds.samples}["bees/more/m.png"] == 1
    assert any("ants/borrowed" in n for n in ds.notes) and any("wasps" in n for n in ds.notes)


def test_empty_data_is_refused_not_the_current_folder(class_tree, monkeypatch):
    """Issue 17: `featx scan ""` scanned the current folder."""
    from featx.errors import ConfigError

    monkeypatch.chdir(class_tree)
    for empty in ("", "  "):
        with pytest.raises(ConfigError, match="DATA is empty"):
            open_dataset(empty)


def test_manifest_with_unusable_file_names_is_handled(tmp_path):
    """Issue 17: a 300-character file name in a manifest ended in a traceback (ENAMETOOLONG)."""
    write_image(tmp_path / "img" / "a.png", 1)
    write_image(tmp_path / "img" / "b.png", 2)
    long_name = "x" * 300 + ".png"
    (tmp_path / "m.csv").write_text(f"path,label\nimg/a.png,cat\nimg/b.png,dog\nimg/{long_name},cat\n")
    ds = open_dataset(tmp_path / "m.csv")
    assert len(ds.samples) == 2
    assert ds.skipped == [(f"img/{long_name}", "file name too long")]


def test_manifest_naming_only_missing_files_says_so(tmp_path):
    (tmp_path / "m.csv").write_text("path,label\nnope/a.png,cat\nnope/b.png,dog\n")
    with pytest.raises(DataError, match=r"m\.csv: no images found .*2 .*not found.*nope/a\.png"):
        open_dataset(tmp_path / "m.csv")


def test_a_class_whose_images_all_fail_is_warned_about(class_tree):
    """Issue 17: a class whose images all failed stayed a class with 0 training samples, silently."""
    from featx.data import classes_without_training

    for png in (class_tree / "bees").glob("*.png"):
        png.write_bytes(b"not a png")
    ds = open_dataset(class_tree, DatasetOptions(val_frac=0.0, test_frac=0.0))
    report = scan_images(ds)
    assert report.warnings == ["class 'bees' has no usable training image (6 of 6 failed to decode)"]
    assert classes_without_training(ds, [s.path for s in ds.samples if "bees" in s.path]) == ["bees"]
    assert classes_without_training(ds, []) == []


def test_manifest_header_in_any_order_and_columns_that_do_not_exist(tmp_path):
    write_image(tmp_path / "img" / "a.png", 1)
    write_image(tmp_path / "img" / "b.png", 2)
    (tmp_path / "m.csv").write_text("label,path\ncat,img/a.png\ndog,img/b.png\n")
    ds = open_dataset(tmp_path / "m.csv")  # the header was taken for a row: path not first
    assert ds.classes == ["cat", "dog"] and len(ds.samples) == 2
    with pytest.raises(DataError, match=r"m\.csv: no label column 5 \(0-based; the rows have 2 columns\)"):
        open_dataset(tmp_path / "m.csv", DatasetOptions(label_col=5))
    with pytest.raises(DataError, match=r"label column index must be 0 or more, got -1"):
        open_dataset(tmp_path / "m.csv", DatasetOptions(label_col=-1))  # was the last column
    with pytest.raises(DataError, match=r"no label column named 'kind' \(columns: label, path\)"):
        open_dataset(tmp_path / "m.csv", DatasetOptions(label_col="kind"))
    (tmp_path / "n.csv").write_text("label,score\ncat,1\ndog,2\n")
    with pytest.raises(DataError, match=r"n\.csv: no column of image file names"):
        open_dataset(tmp_path / "n.csv")


def test_a_dataset_where_nothing_decodes_is_an_error(class_tree):
    from featx.data import require_decodable

    ds = open_dataset(class_tree)
    require_decodable(ds, {ds.samples[0].path: "broken"})  # one failure is not an error
    with pytest.raises(DataError, match=r"none of the 12 images could be decoded \(the first: ants/ants_00.png: bad\)"):
        require_decodable(ds, {s.path: "bad" for s in ds.samples})
