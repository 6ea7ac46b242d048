"""Issue 30: `featx select` on a store's unlabelled rows, near-copies left out, and the loop
select -> label -> extract -> train-head walked twice with no forward on the relabel."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import featx
from featx.errors import ConfigError, StoreError
from featx.explore import SelectConfig, select
from tests.conftest import write_image
from tests.test_explore import clusters, make_store

QUIET = dict(log=lambda line: None)


def _pool_store(tmp_path: Path) -> tuple[Path, np.ndarray, dict]:
    """Three clusters; a few labelled rows per cluster; unlabelled rows, among them a near-copy
    of a labelled row and a pair of near-copies of each other (no images: cosine alone decides)."""
    x, which = clusters([30, 30, 30], dim=16, spread=1.5, seed=7)
    labels = np.full(len(x), -1)
    labels[[0, 1, 30, 31, 60, 61]] = which[[0, 1, 30, 31, 60, 61]]
    rng = np.random.default_rng(0)
    copy_of_labelled = x[0] + rng.normal(size=16).astype(np.float32) * 0.01
    twin_a = x[45] * 3.0 + 20.0  # far from everything, so every strategy wants it
    twin_b = twin_a + rng.normal(size=16).astype(np.float32) * 0.01
    x = np.concatenate([x, [copy_of_labelled, twin_a, twin_b]])
    labels = np.concatenate([labels, [-1, -1, -1]])
    splits = np.where(labels >= 0, "train", "unlabeled")
    special = {"copy": len(x) - 3, "twin_a": len(x) - 2, "twin_b": len(x) - 1}
    return make_store(tmp_path / "pool.h5", x, labels, splits), x, special


@pytest.mark.parametrize("strategy", featx.explore.STRATEGIES)
def test_no_pick_is_a_near_copy_of_a_label_or_of_another_pick(tmp_path, strategy):
    store, x, special = _pool_store(tmp_path)
    picks = select(store, budget=200, strategy=strategy, **QUIET)
    names = {f"img/{i:05d}.png": i for i in range(len(x))}
    rows = [names[p] for p in picks.paths]
    pool = 84 + 3  # unlabelled rows
    assert len(rows) == len(set(rows)) == pool - 2  # the budget is clipped to what is left
    assert special["copy"] not in rows and special["twin_a"] in rows and special["twin_b"] not in rows
    why = dict(picks.excluded)
    assert why[f"img/{special['copy']:05d}.png"] == "near-copy of labelled img/00000.png"
    assert why[f"img/{special['twin_b']:05d}.png"] == f"near-duplicate of img/{special['twin_a']:05d}.png"
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = unit[rows] @ unit[rows].T
    assert (sims[~np.eye(len(rows), dtype=bool)] < 0.97).all()


def test_the_csv_says_why_each_was_picked_and_copy_to_copies_the_files(tmp_path):
    root = tmp_path / "data"
    x, which = clusters([12, 12], dim=8, seed=8)
    names = [f"img/{i:02d}.png" for i in range(len(x))]
    for i, name in enumerate(names):
        write_image(root / name, 500 + i)
    labels = np.where(np.arange(len(x)) % 6 == 0, which, -1)
    store = make_store(tmp_path / "s.h5", x, labels, np.where(labels >= 0, "train", "unlabeled"),
                       classes=("a", "b"), root=root, names=names)
    picks = select(store, budget=3, strategy="margin", **QUIET)
    table = list(csv.DictReader(open(picks.to_csv(tmp_path / "picks.csv"))))
    assert [r["path"] for r in table] == picks.paths and len(table) == 3
    assert all(r["strategy"] == "margin" and "hesitates" in r["reason"] and r["predicted"] in "ab"
               and r["label"] == "" for r in table)
    margins = [float(r["score"]) for r in table]
    assert margins == sorted(margins)  # the most doubtful first
    copied = picks.copy_to(tmp_path / "to_label")
    assert [p.read_bytes() for p in copied] == [(root / p).read_bytes() for p in picks.paths]
    # the next round into the same folder replaces this round's copies, not the user's files
    mine = tmp_path / "to_label" / "notes.txt"
    mine.write_text("mine")
    edited = copied[0]
    edited.write_bytes(edited.read_bytes() + b"!")  # e.g. a labelling tool that rewrote it
    again = [picks.paths[0], *[p for p in names if p not in picks.paths][:2]]  # the edited one picked again
    later = replace(picks, paths=again)
    later.copy_to(tmp_path / "to_label")
    left = {p.relative_to(tmp_path / "to_label").as_posix() for p in (tmp_path / "to_label").rglob("*")
            if p.is_file() and p.name != ".featx-copied.json"}
    assert left == set(again) | {"notes.txt"} and later.cleared == 2  # the two untouched copies
    assert edited.read_bytes().endswith(b"!") and mine.read_text() == "mine"  # never overwritten


def test_bad_requests_are_one_line_errors(tmp_path):
    store, _, _ = _pool_store(tmp_path)
    with pytest.raises(ConfigError, match="--budget 0"):
        select(store, budget=0, **QUIET)
    with pytest.raises(ConfigError, match="--strategy 'best'"):
        SelectConfig(5, "best")
    x, which = clusters([5, 5], seed=9)
    labelled = make_store(tmp_path / "all.h5", x, which, ["train"] * 10)
    with pytest.raises(StoreError, match="no unlabelled samples"):
        select(labelled, budget=2, **QUIET)


# --- the loop, twice --------------------------------------------------------------------------

def _write_manifest(path: Path, labels: dict[str, str]) -> None:
    rows = [f"{p},{y},{'test' if p.endswith(('0.png', '5.png')) else 'train'}" for p, y in sorted(labels.items())]
    path.write_text("path,label,split\n" + "\n".join(rows) + "\n")


def test_select_label_extract_train_twice_with_no_forward_on_the_relabel(tmp_path, monkeypatch):
    import featx.extraction.runner

    root = tmp_path / "cells"
    truth = {}
    for i in range(24):
        name = f"img/{i:02d}.png"
        write_image(root / name, 900 + i, size=(32 + i % 5, 32))
        truth[name] = "ab"[i % 2]
    known = {p: (y if int(p[4:6]) < 8 else "") for p, y in truth.items()}  # 8 labelled, 16 not
    manifest = root / "labels.csv"
    _write_manifest(manifest, known)
    tiny = dict(weights="none", batch_size=8, views=0, workers=0, engine="torch", show_progress=False)
    store = featx.extract(featx.open_dataset(manifest), "tiny_cnn", tmp_path / "stores", **tiny).store
    monkeypatch.setattr(featx.extraction.runner.Runner, "run", lambda *a, **k: pytest.fail("a backbone forward"))
    for round_ in range(2):
        picks = featx.select(store, budget=4, strategy="coreset", **QUIET)
        assert len(picks) == 4 and not set(picks.paths) & {p for p, y in known.items() if y}
        for path in picks.paths:  # the user labels the picks in the manifest
            known[path] = truth[path]
        _write_manifest(manifest, known)
        run = featx.extract(featx.open_dataset(manifest), "tiny_cnn", tmp_path / "stores", **tiny)
        assert run.status == "updated" and run.images == 0 and run.store == store
        with featx.FeatureStore(store) as st:
            labelled = {p for p, y in zip(st.paths, st.labels) if y >= 0}
        assert labelled == {p for p, y in known.items() if y} and len(labelled) == 8 + 4 * (round_ + 1)
        head = featx.train_head(store, "linear", featx.HeadConfig(epochs=2), out=tmp_path / "heads",
                                show_progress=False)
        assert head.meta["store_version"] == round_ + 2


def test_the_cli_lists_the_librarys_strategies_default_and_map_methods():
    from featx.cli import explore_cmds
    from featx.explore import DEFAULT_STRATEGY, STRATEGIES
    from featx.explore.coords import METHODS

    assert (explore_cmds.STRATEGIES, explore_cmds.DEFAULT_STRATEGY, explore_cmds.METHODS) == \
        (STRATEGIES, DEFAULT_STRATEGY, METHODS)


# --- the loop on a class-folder dataset: label by moving files out of unlabeled/ --------------

def _folder_pool(root: Path, labelled: int = 8, total: int = 24) -> dict[str, str]:
    """Class folders a/ and b/ with `labelled` images, the other images in unlabeled/; returns
    every image's true class by file name."""
    truth = {}
    for i in range(total):
        name, y = f"u_{i:02d}.png", "ab"[i % 2]
        write_image(root / (y if i < labelled else "unlabeled") / name, 900 + i, size=(32 + i % 5, 32))
        truth[name] = y
    return truth


def _label_by_moving(root: Path, picks: list[str], truth: dict[str, str]) -> None:
    for rel in picks:  # what the user does: mv unlabeled/u_09.png b/
        assert rel.startswith("unlabeled/")
        (root / rel).rename(root / truth[Path(rel).name] / Path(rel).name)


def test_the_loop_on_class_folders_moves_picks_out_of_unlabeled_with_no_forward(tmp_path, monkeypatch):
    import featx.extraction.runner

    root = tmp_path / "cells"
    truth = _folder_pool(root)
    tiny = dict(weights="none", batch_size=8, views=0, workers=0, engine="torch", show_progress=False)
    first = featx.extract(featx.open_dataset(root), "tiny_cnn", tmp_path / "stores", **tiny)
    store = first.store
    with featx.FeatureStore(store) as st:
        assert st.classes == ["a", "b"] and (st.labels < 0).sum() == 16
    monkeypatch.setattr(featx.extraction.runner.Runner, "run", lambda *a, **k: pytest.fail("a backbone forward"))
    for round_ in range(2):
        picks = featx.select(store, budget=4, strategy="coreset", **QUIET)
        assert len(picks) == 4 and all(p.startswith("unlabeled/") for p in picks.paths)
        assert picks.how_to_label().startswith(f"move each pick from unlabeled/ into its class folder "
                                               f"(mv {picks.paths[0]} CLASS/, in the dataset folder)")
        _label_by_moving(root, picks.paths, truth)
        run = featx.extract(featx.open_dataset(root), "tiny_cnn", tmp_path / "stores", **tiny)
        assert run.status == "updated" and run.images == 0 and run.store == store
        assert "4 relabelled, 4 moved" in run.update and run.version == round_ + 2
        with featx.FeatureStore(store) as st:
            got = {p: st.classes[y] for p, y in zip(st.paths, st.labels) if y >= 0}
            assert sorted(st.paths) == sorted(str(p.relative_to(root)) for p in root.rglob("*.png"))
        assert len(got) == 8 + 4 * (round_ + 1) and all(truth[Path(p).name] == y for p, y in got.items())
        assert all(Path(p).parent.name == y for p, y in got.items())
        head = featx.train_head(store, "linear", featx.HeadConfig(epochs=2), out=tmp_path / "heads",
                                show_progress=False)
        assert head.meta["store_version"] == round_ + 2


def test_with_views_only_the_picks_moved_into_train_are_forwarded_and_match_a_fresh_store(tmp_path, monkeypatch):
    """Views are seeded by the path: a pick moved into train needs its own (computed, alone); one
    moved into val or test keeps its row. The update equals a fresh extraction of the new tree."""
    import featx.extraction.runner
    from tests.conftest import assert_same_store

    root = tmp_path / "cells"
    truth = _folder_pool(root, labelled=6, total=20)
    tiny = dict(weights="none", batch_size=8, views=1, aug="mild", workers=0, engine="torch", show_progress=False)
    store = featx.extract(featx.open_dataset(root), "tiny_cnn", tmp_path / "stores", **tiny).store
    picks = featx.select(store, budget=8, strategy="random", **QUIET)
    assert "forwarded for their 1 views" in picks.how_to_label()
    _label_by_moving(root, picks.paths, truth)
    dataset = featx.open_dataset(root)
    split_of = {Path(s.path).name: s.split for s in dataset.samples}
    into_train = {Path(p).name for p in picks.paths if split_of[Path(p).name] == "train"}
    assert 0 < len(into_train) < len(picks)  # both cases met (splits follow the content)
    forwarded = []
    real_run = featx.extraction.runner.Runner.run

    def spy(self):
        forwarded.extend(Path(s.path).name for s in self.dataset.samples)
        return real_run(self)

    monkeypatch.setattr(featx.extraction.runner.Runner, "run", spy)
    run = featx.extract(dataset, "tiny_cnn", tmp_path / "stores", **tiny)
    assert run.status == "updated" and sorted(forwarded) == sorted(into_train)
    assert run.images == 2 * len(into_train)  # the clean view and the one augmented view of each
    fresh = featx.extract(dataset, "tiny_cnn", tmp_path / "fresh", **tiny)
    assert_same_store(Path(run.store), Path(fresh.store))


def test_an_unlabeled_folder_alone_is_an_unlabelled_dataset_that_labelling_updates(tmp_path, monkeypatch):
    """No class folder yet: coreset picks from nothing labelled; the first classes made by
    moving picks are an update of the same store (the layout stays class folders)."""
    import featx.extraction.runner

    root = tmp_path / "new"
    truth = _folder_pool(root, labelled=0, total=12)
    dataset = featx.open_dataset(root)
    assert dataset.layout == "class-folders" and dataset.classes == []
    assert {s.split for s in dataset.samples} == {"unlabeled"}
    tiny = dict(weights="none", batch_size=8, views=0, workers=0, engine="torch", show_progress=False)
    store = featx.extract(dataset, "tiny_cnn", tmp_path / "stores", **tiny).store
    picks = featx.select(store, budget=4, strategy="coreset", **QUIET)
    for name in {truth[Path(p).name] for p in picks.paths}:
        (root / name).mkdir()
    _label_by_moving(root, picks.paths, truth)
    monkeypatch.setattr(featx.extraction.runner.Runner, "run", lambda *a, **k: pytest.fail("a backbone forward"))
    run = featx.extract(featx.open_dataset(root), "tiny_cnn", tmp_path / "stores", **tiny)
    assert run.status == "updated" and run.images == 0 and run.version == 2
    with featx.FeatureStore(store) as st:
        assert st.classes == sorted({truth[Path(p).name] for p in picks.paths}) and (st.labels >= 0).sum() == 4


def test_select_from_the_command_line_says_how_to_label_a_folder_dataset(tmp_path):
    from typer.testing import CliRunner

    from featx.cli import app

    root = tmp_path / "cells"
    _folder_pool(root)
    tiny = dict(weights="none", batch_size=8, views=0, workers=0, engine="torch", show_progress=False)
    store = featx.extract(featx.open_dataset(root), "tiny_cnn", tmp_path / "stores", **tiny).store
    result = CliRunner().invoke(app, ["select", store, "--budget", "3", "--strategy", "coreset", "--out",
                                      str(tmp_path / "p.csv"), "--copy-to", str(tmp_path / "copies")],
                                env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "3 of 16 unlabelled images picked by coreset" in result.output
    first = next(csv.DictReader(open(tmp_path / "p.csv")))["path"]
    assert result.stdout.splitlines()[-1] == (
        f"next: move each pick from unlabeled/ into its class folder (mv {first} CLASS/, in the dataset "
        f"folder), then re-run the featx extract that made the store (a relabel, no forward) on {root}")
    assert sorted(p.relative_to(tmp_path / "copies").parent.as_posix()
                  for p in (tmp_path / "copies").rglob("*.png")) == ["unlabeled"] * 3
    assert f"; 3 picks copied into {tmp_path / 'copies'}\n" in result.stdout
    mine = next((tmp_path / "copies" / "unlabeled").glob("*.png"))
    mine.write_bytes(mine.read_bytes() + b"edited")  # a labelling tool rewrote one copy
    again = CliRunner().invoke(app, ["select", store, "--budget", "16", "--strategy", "random", "--out",
                                     str(tmp_path / "p.csv"), "--copy-to", str(tmp_path / "copies")],
                               env={"COLUMNS": "300"})
    assert again.exit_code == 0, again.output
    assert (f"; 15 picks copied into {tmp_path / 'copies'} (the last round's 2 copies removed first; 1 pick not "
            "copied: a file featx did not copy is at its path, kept as it is)") in again.stdout


def test_the_hint_names_the_pool_folder_the_split_folders_and_the_cost_of_views():
    from featx.explore.select import Selection

    picks = Selection(Path("s.h5"), Path("/data/my cells"), "random", ["train/Unlabelled/a.png"], np.zeros(1),
                      [""], [""], layout="split-folders", views=2)
    assert picks.how_to_label() == (
        "move each pick from train/Unlabelled/ into a class folder of train/, val/ or test/ (mv "
        "train/Unlabelled/a.png train/CLASS/, in the dataset folder), then re-run the featx extract that "
        "made the store (a relabel; picks that land in the train split are forwarded for their 2 views) "
        "on '/data/my cells'")
    picks.layout = "manifest"
    assert picks.how_to_label().startswith("label them in the manifest (the label column)")
    # Loose images (no unlabeled/ yet): the folders to make, and a name with a space quoted.
    loose = Selection(Path("s.h5"), Path("/data/loose"), "random", ["pic 0.png"], np.zeros(1), [""], [""],
                      layout="unlabeled-folder")
    assert loose.how_to_label().startswith("make class folders and an unlabeled/ folder, move each pick "
                                           "into its class folder (mv 'pic 0.png' CLASS/) and every other "
                                           "image into unlabeled/")
