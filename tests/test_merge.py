"""featx.store.merge: shard stores of a distributed run -> one store, checked before writing."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

import featx.runtime.distributed
from featx.data import DatasetOptions, open_dataset
from featx.runtime.distributed import DistContext
from featx.errors import ConfigError, StoreError
from featx.extraction import ExtractConfig, extract, extract_shard
from featx.store import FeatureStore, merge_shards, shard_path

# The tiny test backbone (tests/tiny_backbone.py): merging is about rows, not the network.
NET = "tiny_cnn"
CFG = dict(weights="none", input_size=32, batch_size=4, views=2, workers=0)
ARRAYS = ("features/clean", "features/aug", "features/aug_rows", "done/clean", "done/aug",
          "failed/reason", "samples/path", "samples/label", "samples/split")


def _arrays(path):
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in ARRAYS}


def _as_rank(monkeypatch, rank: int, world: int = 2) -> None:
    """Run the next extract as one rank of a `world`-process job, in this process."""
    monkeypatch.setattr(featx.runtime.distributed, "context", lambda: DistContext(rank, world, rank))
    monkeypatch.setattr(featx.runtime.distributed, "init", lambda ctx, device: None)


@pytest.fixture
def dataset(class_tree):
    return open_dataset(class_tree, DatasetOptions(val_frac=0.0, test_frac=0.5))


def _sharded(dataset, out, monkeypatch, seed=0, ranks=(1, 0)):
    """Ranks run one after the other (rank 0 last: it merges); returns the final store path."""
    result = None
    for rank in ranks:
        _as_rank(monkeypatch, rank)
        result = extract(dataset, NET, out, ExtractConfig(seed=seed, **CFG), show_progress=False)
    monkeypatch.undo()
    return Path(result.store)


def test_sharded_run_merges_into_the_single_process_store(tmp_path, dataset, monkeypatch):
    merged = _sharded(dataset, tmp_path / "multi", monkeypatch)
    single = extract(dataset, NET, tmp_path / "single", ExtractConfig(**CFG), show_progress=False)
    a, b = _arrays(merged), _arrays(single.store)
    for key in ARRAYS:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert not list((tmp_path / "multi").glob("*.shard*"))  # copied, then removed
    with FeatureStore(merged) as st:
        assert st.complete and st.attrs["world_size"] == 2 and st.attrs["merge_mode"] == "copy"
    # The merged store is the store of this data: a plain re-run has nothing to do.
    again = extract(dataset, NET, tmp_path / "multi", ExtractConfig(**CFG), show_progress=False)
    assert again.status == "complete"


def _shards(dataset, out, seed=0):
    """Both shard stores of a 2-process run, written without torchrun and not merged."""
    return [Path(extract_shard(dataset, NET, out, rank, 2, ExtractConfig(seed=seed, **CFG),
                               show_progress=False).store) for rank in (0, 1)]


def test_virtual_merge_reads_the_same_and_survives_moving_the_folder(tmp_path, dataset):
    shards = _shards(dataset, tmp_path / "s")
    assert len(shards) == 2
    copy = merge_shards(shards, tmp_path / "s" / "copy.h5")
    virtual = merge_shards(shards, tmp_path / "s" / "virtual.h5", mode="virtual")
    assert virtual.stat().st_size < copy.stat().st_size
    shutil.move(tmp_path / "s", tmp_path / "moved")
    a, b = _arrays(tmp_path / "moved" / "copy.h5"), _arrays(tmp_path / "moved" / "virtual.h5")
    for key in ARRAYS:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_merge_refuses_shards_that_do_not_belong_together(tmp_path, dataset):
    ours = _shards(dataset, tmp_path / "a", seed=0)
    theirs = _shards(dataset, tmp_path / "b", seed=1)
    with pytest.raises(StoreError, match=r"cannot merge with the other shards: .*seed is 1 in it, 0 in"):
        merge_shards([ours[0], theirs[1]], tmp_path / "m.h5")
    with pytest.raises(StoreError, match=r"missing rank\(s\) \[1\]"):
        merge_shards([ours[0]], tmp_path / "m.h5")
    with h5py.File(ours[1], "r+") as f:
        f.attrs.modify("complete", np.uint8(0))
    with pytest.raises(StoreError, match="shard is incomplete; re-run the same torchrun command"):
        merge_shards(ours, tmp_path / "m.h5")
    single = extract(dataset, NET, tmp_path / "c", ExtractConfig(**CFG), show_progress=False)
    with pytest.raises(StoreError, match="not a shard store"):
        merge_shards([Path(single.store)], tmp_path / "m.h5")
    assert not (tmp_path / "m.h5").exists() and not list(tmp_path.glob("m.h5.tmp-*"))
    assert shard_path(Path("x/s.h5"), 1, 4) == Path("x/s.shard001-of-004.h5")


@pytest.mark.parametrize("exc, says", [(RuntimeError("Can't write data (No space left on device)"), "disk full"),
                                       (ValueError("Unable to create dataset"), "cannot write")],
                         ids=["RuntimeError", "ValueError"])
def test_merge_on_a_full_disk_is_one_line_and_leaves_no_file(tmp_path, dataset, monkeypatch, exc, says):
    import featx.store.merge

    shards = _shards(dataset, tmp_path / "s")

    def fail(f, infos, out, mode):
        raise exc

    monkeypatch.setattr(featx.store.merge, "_write_merged", fail)
    with pytest.raises(StoreError, match=rf"m\.h5: merging failed: {says}"):
        merge_shards(shards, tmp_path / "m.h5")
    assert not (tmp_path / "m.h5").exists() and not list(tmp_path.glob("m.h5.tmp-*"))
    assert all(FeatureStore(p).complete for p in shards)  # the shards are untouched


def test_merge_checks_its_output_before_writing(tmp_path, dataset, monkeypatch):
    import shutil as sh

    shards = _shards(dataset, tmp_path / "s")
    with pytest.raises(StoreError, match=r"--out .*: is a folder"):
        merge_shards(shards, tmp_path / "s")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"file: exists and is not a folder"):
        merge_shards(shards, tmp_path / "file" / "m.h5")
    monkeypatch.setattr(sh, "disk_usage", lambda p: sh._ntuple_diskusage(10**12, 10**12, 1000))
    with pytest.raises(StoreError, match=r"m\.h5: the merged store would take .* has 1.0 kB free"):
        merge_shards(shards, tmp_path / "m.h5")
    assert not (tmp_path / "m.h5").exists()


def test_a_sharded_cut_store_merges_its_maps_and_updates_like_one_process(tmp_path, class_tree, monkeypatch):
    """The maps of --cut (finetune --from-block) are merged like the features, and a sharded
    update of such a store gives what one process extracting the new data gives."""
    import featx.store.merge
    from tests.conftest import write_image

    monkeypatch.setattr(featx.store.merge, "COPY_BYTES", 64)  # maps [K, n, C, H, W]: a row at a time
    config = dict(CFG, cut="features.4")  # tiny_features: a cut point of its own
    options = DatasetOptions(val_frac=0.0, test_frac=0.5)
    maps = ("cut/features.4/clean", "cut/features.4/aug")

    def sharded(out):
        with pytest.MonkeyPatch.context() as ranks:  # undone after: the single runs are one process
            for rank in (1, 0):
                _as_rank(ranks, rank)
                result = extract(open_dataset(class_tree, options), "tiny_features", out, ExtractConfig(**config),
                                 show_progress=False)
        return Path(result.store)

    def single(out):
        return extract(open_dataset(class_tree, options), "tiny_features", out, ExtractConfig(**config),
                       show_progress=False).store

    for update in (False, True):
        if update:
            for i in range(3):
                write_image(class_tree / "ants" / f"new_{i}.png", 500 + i)
        merged, alone = sharded(tmp_path / "multi"), single(tmp_path / f"single{update}")
        with h5py.File(merged, "r") as a, h5py.File(alone, "r") as b:
            for key in ARRAYS + maps:
                np.testing.assert_array_equal(a[key][()], b[key][()], err_msg=f"{key} (update: {update})")


def test_a_merge_copied_a_few_rows_at_a_time_is_the_same_store(tmp_path, dataset, monkeypatch):
    import featx.store.merge

    monkeypatch.setattr(featx.store.merge, "COPY_BYTES", 64)  # a row or two per read and write
    merged = merge_shards(_shards(dataset, tmp_path / "shards"), tmp_path / "merged.h5")
    single = extract(dataset, NET, tmp_path / "single", ExtractConfig(**CFG), show_progress=False)
    a, b = _arrays(merged), _arrays(single.store)
    for key in ARRAYS:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
