"""A no-op re-run of `featx extract` is decided before torch (featx.extraction.noop): no torch
import, no backbone, the same summary; so is an update that computes no row (a relabel, a move);
everything else still takes the full run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

import featx.extraction.noop
import featx.extraction.run
from featx.errors import StoreError
from featx.extraction import ExtractConfig, extract
from tests.conftest import assert_same_store, make_class_tree
from tests.image_trees import write_image

ROOT = Path(__file__).resolve().parents[1]
# A built-in backbone (static card), random init, tiny input, torch engine (no ONNX export).
LITE = dict(weights="none", input_size=32, engine="torch")
CLI_LITE = ["--backbone", "efficientnet_lite0", "--weights", "none", "--input-size", "32", "--engine", "torch"]
# Runs `featx` as a user does, then says whether torch was imported (on stderr, last line).
CLI_AND_TORCH = """import sys
from featx.cli import main
sys.argv = ["featx", *sys.argv[1:]]
try:
    main()
finally:
    print("torch imported:", "torch" in sys.modules, file=sys.stderr)
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_class_tree(tmp_path / "cells", per_class=3)


def _extract(tree: Path, out: Path, **options):
    return extract(str(tree), "efficientnet_lite0", out, ExtractConfig(**{**LITE, **options}),
                   show_progress=False)


def _no_build(monkeypatch) -> None:
    monkeypatch.setattr(featx.extraction.run, "build_job", lambda *a, **k: pytest.fail("backbone built"))


def test_a_no_op_rerun_imports_no_torch(tmp_path, tree):
    first = _extract(tree, tmp_path / "stores")
    run = subprocess.run([sys.executable, "-c", CLI_AND_TORCH, "extract", str(tree), *CLI_LITE,
                          "--out", str(tmp_path / "stores")],
                         capture_output=True, text=True, cwd=ROOT, env={**os.environ, "COLUMNS": "200"})
    assert run.returncode == 0, run.stderr
    assert "efficientnet_lite0: already complete (6 samples, 0 failed); nothing to do:" in run.stdout
    assert first.store in run.stdout and f"next: featx train-head {first.store}" in run.stdout
    assert run.stderr.strip().splitlines()[-1] == "torch imported: False"


@pytest.mark.parametrize("options", [{}, {"pool": "none"}, {"pool": "block5"}, {"tta": "flip"}, {"seed": 3}])
def test_a_complete_store_is_found_without_building_the_backbone(tmp_path, tree, monkeypatch, options):
    first = _extract(tree, tmp_path, **options)
    _no_build(monkeypatch)
    again = _extract(tree, tmp_path, **options)
    assert (again.status, again.store, again.images, again.samples) == ("complete", first.store, 0, 6)


def test_a_changed_dataset_still_updates(tmp_path, tree):
    _extract(tree, tmp_path)
    write_image(tree / "ants" / "new.png", seed=77)
    assert _extract(tree, tmp_path).status == "updated"


def _relabel(tree: Path) -> None:
    """The labelling loop's change: an image moved to the other class, one to a new name."""
    (tree / "ants" / "ants_00.png").rename(tree / "bees" / "was_an_ant.png")
    (tree / "bees" / "bees_01.png").rename(tree / "bees" / "renamed.png")


def test_an_update_that_forwards_nothing_needs_no_torch(tmp_path, tree):
    first = _extract(tree, tmp_path / "stores")
    _relabel(tree)
    run = subprocess.run([sys.executable, "-c", CLI_AND_TORCH, "extract", str(tree), *CLI_LITE,
                          "--out", str(tmp_path / "stores")],
                         capture_output=True, text=True, cwd=ROOT, env={**os.environ, "COLUMNS": "200"})
    assert run.returncode == 0, run.stderr
    assert ("efficientnet_lite0: updated to version 2: +0 new, 0 changed, 0 removed, 6 kept (1 relabelled, "
            "2 moved); 0 images forwarded") in run.stdout and first.store in run.stdout
    assert run.stderr.strip().splitlines()[-1] == "torch imported: False"


def test_an_update_without_torch_is_the_full_runs_update(tmp_path, tree, monkeypatch):
    _extract(tree, tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # the same store twice, updated both ways
    _relabel(tree)
    with monkeypatch.context() as m:
        m.setattr(featx.extraction.noop, "relabel_update", lambda *a, **k: None)  # the full run's update
        full = _extract(tree, tmp_path / "a")
    _no_build(monkeypatch)
    fast = _extract(tree, tmp_path / "b")
    assert (fast.status, fast.images, fast.version, fast.update) == (full.status, 0, 2, full.update)
    assert_same_store(Path(full.store), Path(fast.store))


def test_a_rename_needs_no_backbone_and_another_engine_is_refused_as_before(tmp_path, tree, monkeypatch):
    import json

    from featx.data import open_dataset

    names = tmp_path / "names.json"
    names.write_text(json.dumps({"ants": "Formicidae"}))
    first = _extract(tree, tmp_path)
    with monkeypatch.context() as m:
        _no_build(m)
        renamed = extract(open_dataset(tree, {"class_map": str(names)}), "efficientnet_lite0", tmp_path,
                          ExtractConfig(**LITE), show_progress=False)
    assert renamed.status == "updated" and "(1 class renamed" in renamed.update
    _relabel(tree)
    # a relabel asked of another engine is refused as the full run refuses it, not done quietly
    with pytest.raises(StoreError, match="engine is torch in the store, onnxruntime requested"):
        _extract(tree, tmp_path, engine="onnxruntime")
    assert _extract(tree, tmp_path).store == first.store


def test_a_touch_only_rerun_keeps_the_version_without_a_backbone(tmp_path, tree, monkeypatch):
    _extract(tree, tmp_path)
    for image in tree.rglob("*.png"):
        os.utime(image, ns=(1_000_000_000, 1_000_000_000))
    _no_build(monkeypatch)
    touched = _extract(tree, tmp_path)
    assert (touched.status, touched.version, touched.same_data, touched.images) == ("updated", 1, True, 0)
    assert _extract(tree, tmp_path).status == "complete"


def test_same_size_new_bytes_with_the_old_mtime_still_updates(tmp_path, tree):
    """The listing alone (path, size, mtime) looks the same: the content hash tells."""
    first = _extract(tree, tmp_path)
    image = tree / "bees" / "bees_01.png"
    stat = image.stat()
    write_image(image, seed=5)  # another image's pixels: same size, other bytes
    assert image.stat().st_size == stat.st_size
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = _extract(tree, tmp_path)
    assert again.status == "updated" and again.store == first.store and "1 changed" in again.update


def test_an_unfinished_store_resumes(tmp_path, tree):
    first = _extract(tree, tmp_path)
    with h5py.File(first.store, "r+") as f:  # as if killed before its last batch committed
        f.attrs["complete"] = 0
        f["done/clean"][-1] = 0
    again = _extract(tree, tmp_path)
    assert again.status == "resumed" and again.images == 6  # its batch: all 6 images


def test_other_settings_at_the_same_path_are_still_refused(tmp_path, tree):
    """dtype is not in the store's name: the full run's error, as before."""
    _extract(tree, tmp_path)
    with pytest.raises(StoreError, match="dtype is float16 in the store, float32 requested"):
        _extract(tree, tmp_path, dtype="float32")


def test_another_backbone_setting_makes_a_new_store(tmp_path, tree):
    first = _extract(tree, tmp_path)
    other = _extract(tree, tmp_path, pool="none")
    assert other.status == "created" and other.store != first.store


def test_a_no_op_rerun_still_counts_the_failed_images(tmp_path, tree, monkeypatch):
    (tree / "ants" / "broken.png").write_bytes(b"not a png")
    first = _extract(tree, tmp_path)
    _no_build(monkeypatch)
    again = _extract(tree, tmp_path)
    assert (first.failed, again.status, again.failed, again.warnings) == (1, "complete", 1, first.warnings)
