"""featx.store: create, validate, lock, write, finish and read feature stores."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

from featx.data import DatasetOptions, open_dataset
from featx.errors import StoreError
from featx.store import (FeatureStore, StoreLock, StoreSpec, StoreWriter, check_room, is_complete,
                         planned_bytes, prepare_store, read_attrs, read_done)
from tests.conftest import write_image

DIM, K = 4, 2


def _spec(**changes) -> StoreSpec:
    provenance = {"backbone": "toy", "weights": {"source": "random-init(seed=0)"},
                  "weights_sha256": "random-init(seed=0)", "input_size": 32,
                  "transform": {"clean": {"input_size": 32}, "aug": None, "views": K}, "seed": 0,
                  "device": "cpu", "engine": "torch", "batch_size": 4}
    provenance.update(changes)
    return StoreSpec(provenance=provenance, feature_dim=DIM, num_aug_views=K)


@pytest.fixture
def dataset(class_tree):
    return open_dataset(class_tree, DatasetOptions(val_frac=0.0, test_frac=0.5))


def _fill(path, dataset, failed_row=None):
    """Write every row: clean feature = row index, view k = 100 * (k + 1) + train rank."""
    n = len(dataset.samples)
    train = [i for i, s in enumerate(dataset.samples) if s.split == "train"]
    writer = StoreWriter(path)
    clean = np.repeat(np.arange(n, dtype=np.float16)[:, None], DIM, 1)
    aug = np.stack([np.repeat((100 * (k + 1) + np.arange(len(train), dtype=np.float16))[:, None],
                              DIM, 1) for k in range(K)])
    failed = {failed_row: "truncated image"} if failed_row is not None else {}
    writer.write_batch(0, n, clean, 0, aug, failed)
    writer.finish(1.0, float(n))
    writer.close()
    return train


def test_new_store_has_the_design_layout(tmp_path, dataset):
    path = tmp_path / "s.h5"
    assert prepare_store(path, dataset, _spec()) == "created"
    n = len(dataset.samples)
    with h5py.File(path, "r") as f:  # plain h5py, no featx
        assert f["features/clean"].shape == (n, DIM) and f["features/clean"].dtype == np.float16
        n_train = sum(s.split == "train" for s in dataset.samples)
        assert f["features/aug"].shape == (K, n_train, DIM)
        assert f["done/clean"][:].sum() == 0 and f.attrs["complete"] == 0
        assert list(f["classes"].asstr()[:]) == ["ants", "bees"]
        assert f["samples/path"].asstr()[0] == dataset.samples[0].path
        for key in ("format_version", "featx_version", "backbone", "weights", "feature_dim",
                    "input_size", "transform", "num_aug_views", "seed", "dataset_root",
                    "dataset_fingerprint", "created", "torch_version", "device", "dtype", "engine"):
            assert key in f.attrs, key
    assert not list(tmp_path.glob("*.tmp-*"))


def test_written_store_reads_back_by_split_and_view(tmp_path, dataset):
    path = tmp_path / "s.h5"
    prepare_store(path, dataset, _spec())
    train = _fill(path, dataset, failed_row=1)
    assert prepare_store(path, dataset, _spec()) == "complete"
    with FeatureStore(path) as st:
        assert st.complete and st.failed == {1: "truncated image"}
        X, y = st.features("train")
        rows = [i for i in train if i != 1]
        assert X[:, 0].tolist() == rows and y.tolist() == [dataset.samples[i].label for i in rows]
        Xa, _ = st.features("train", view=1)
        assert Xa[:, 0].tolist() == [200 + j for j, i in enumerate(train) if i != 1]
        Xt, _ = st.torch("test")
        assert Xt.dtype.is_floating_point and len(Xt) == len(dataset.samples) - len(train)
        with pytest.raises(StoreError, match="view 2 does not exist"):
            st.features("train", view=2)


def test_unfinished_store_is_resumable_not_complete(tmp_path, dataset):
    path = tmp_path / "s.h5"
    prepare_store(path, dataset, _spec())
    writer = StoreWriter(path)
    writer.write_batch(0, 2, np.ones((2, DIM), np.float16), 0, None, {})
    writer.finish(1.0, 2.0)
    writer.close()
    done_clean, _ = read_done(path)
    assert done_clean.tolist()[:3] == [True, True, False]
    assert prepare_store(path, dataset, _spec()) == "resumed"


def test_other_settings_are_refused_saying_what_differs(tmp_path, dataset):
    path = tmp_path / "s.h5"
    prepare_store(path, dataset, _spec())
    with pytest.raises(StoreError) as info:
        prepare_store(path, dataset, _spec(backbone="other", seed=3))
    message = str(info.value)
    assert "backbone is toy in the store, other requested" in message
    assert "seed is 0 in the store, 3 requested" in message and "--overwrite" in message
    assert prepare_store(path, dataset, _spec(backbone="other"), overwrite=True) == "created"


def test_changed_dataset_is_explained_in_files(tmp_path, class_tree, dataset):
    path = tmp_path / "s.h5"
    prepare_store(path, dataset, _spec())
    write_image(class_tree / "ants" / "zz_new.png", 99)
    changed = open_dataset(class_tree, DatasetOptions(val_frac=0.0, test_frac=0.5))
    with pytest.raises(StoreError, match=r"the dataset changed: 1 added \(e.g. ants/zz_new.png\)"):
        prepare_store(path, changed, _spec())


def test_second_writer_is_refused(tmp_path):
    path = tmp_path / "s.h5"
    with StoreLock(path):
        with pytest.raises(StoreError, match=r"already being written by pid \d+"):
            StoreLock(path).acquire()
    StoreLock(path).acquire().release()  # free again once the first writer is done


def test_corrupt_and_foreign_files_are_one_line_errors(tmp_path, dataset):
    garbage = tmp_path / "g.h5"
    garbage.write_bytes(b"\0" * 1000)
    with pytest.raises(StoreError, match="g.h5: not an HDF5 file"):
        FeatureStore(garbage)
    with pytest.raises(StoreError, match="not an HDF5 file"):
        prepare_store(garbage, dataset, _spec())
    foreign = tmp_path / "f.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = 1
    with pytest.raises(StoreError, match="f.h5: damaged or not a featx store"):
        FeatureStore(foreign)
    with pytest.raises(StoreError, match="no such store"):
        FeatureStore(tmp_path / "missing.h5")


def test_resume_must_run_on_the_same_kind_of_device_but_a_complete_store_is_reusable(tmp_path, dataset):
    path = tmp_path / "s.h5"
    prepare_store(path, dataset, _spec(device="cuda", amp="bf16", decode="gpu"))
    with pytest.raises(StoreError, match="device is cuda in the store, cpu requested"):
        prepare_store(path, dataset, _spec(device="cpu", amp="off", decode="cpu"))
    _fill(path, dataset)
    assert prepare_store(path, dataset, _spec(device="cpu", amp="off", decode="cpu")) == "complete"


def test_reading_methods_cover_what_callers_read(tmp_path, dataset, monkeypatch):
    """feature_dim, read_clean, read_aug and summary: what heads, predict and `featx info` use
    instead of raw h5py."""
    import featx.store.reader

    path = tmp_path / "s.h5"
    prepare_store(path, dataset, _spec())
    train = _fill(path, dataset)
    n = len(dataset.samples)
    with FeatureStore(path) as st:
        assert st.feature_dim == DIM and st.cut is None
        assert st.read_clean().dtype == np.float32 and st.read_clean()[:, 0].tolist() == list(range(n))
        paths = [s.path for s in dataset.samples]
        # Contiguous spans, HDF5 selections of sparse rows, and rows spread over several spans.
        for sparse, span in ((8, 16384), (0, 16384), (8, 2)):
            monkeypatch.setattr(featx.store.reader, "SPARSE", sparse)
            monkeypatch.setattr(featx.store.reader, "READ_SPAN", span)
            for rows in ([1, 3], [3, 1], [3, 3, 1], [n - 1, 0, 2, 2]):
                assert st.read_clean(rows)[:, 0].tolist() == rows
                assert st.paths_of(rows) == [paths[r] for r in rows]
            assert st.read_clean([]).shape == (0, DIM) and st.paths_of([]) == []
        assert st.read_aug().shape == (K, len(train), DIM)
        assert st.read_aug(1, [0, 2])[:, 0].tolist() == [200, 202]
        assert st.read_aug(ranks=[2])[:, 0, 0].tolist() == [102, 202]
        with pytest.raises(StoreError, match="view 2 does not exist"):
            st.read_aug(2)
        s = st.summary()
        assert s.clean_shape == (n, DIM) and s.aug_shape == (K, len(train), DIM)
        assert (s.done_clean, s.done_aug, s.aug_total) == (n, K * len(train), K * len(train))
        assert s.cut is None and s.cut_shapes == {} and st.cut_nbytes("layer4") == 0


def test_cut_maps_are_read_by_name(tmp_path, dataset):
    path = tmp_path / "s.h5"
    spec = StoreSpec(provenance=_spec().provenance, feature_dim=DIM, num_aug_views=K, cut="layer4",
                     cut_shape=(2, 3, 3))
    prepare_store(path, dataset, spec)
    n, n_train = len(dataset.samples), sum(s.split == "train" for s in dataset.samples)
    writer = StoreWriter(path)
    maps = np.ones((n, 2, 3, 3), np.float16), np.full((K, n_train, 2, 3, 3), 2, np.float16)
    writer.write_batch(0, n, np.zeros((n, DIM), np.float16), 0, np.zeros((K, n_train, DIM), np.float16),
                       {}, maps)
    writer.close()
    with FeatureStore(path) as st:
        assert st.cut == "layer4" and st.has_cut("layer4") and not st.has_cut("layer3")
        np.testing.assert_array_equal(st.cut_maps("layer4"), maps[0])
        np.testing.assert_array_equal(st.cut_maps("layer4", "aug"), maps[1])
        assert st.cut_maps("layer3") is None
        assert st.cut_nbytes("layer4") == maps[0].nbytes + maps[1].nbytes
        assert st.summary().cut_shapes == {"clean": (n, 2, 3, 3), "aug": (K, n_train, 2, 3, 3)}


# --- issue 17: damaged stores, full disks, read-only folders ---------------------------------

TAMPERINGS = {
    "no-classes": (lambda f: f.__delitem__("classes"), r"classes missing"),
    "no-aug-rows": (lambda f: f.__delitem__("features/aug_rows"), r"features/aug_rows missing"),
    "transform-not-json": (lambda f: f.attrs.__setitem__("transform", "{oops"),
                           r"attribute transform is not a JSON object"),
    "no-backbone": (lambda f: f.attrs.__delitem__("backbone"), r"attribute backbone missing"),
    "wrong-feature-dim": (lambda f: f.attrs.__setitem__("feature_dim", 99),
                          r"feature_dim is 99 .* features/clean is \[12, 4\]"),
    "aug-rows-outside": (lambda f: f["features/aug_rows"].__setitem__(0, 999),
                         r"features/aug_rows points outside the 12 samples"),
    "newer-format": (lambda f: f.attrs.__setitem__("format_version", 9), r"store format 9"),
}


@pytest.mark.parametrize("name", sorted(TAMPERINGS))
def test_tampered_store_is_one_line_naming_the_file_and_the_problem(tmp_path, dataset, name):
    change, problem = TAMPERINGS[name]
    path = tmp_path / "s.h5"
    prepare_store(path, dataset, _spec())
    _fill(path, dataset)
    with h5py.File(path, "r+") as f:
        change(f)
    with pytest.raises(StoreError, match=rf"s\.h5: damaged or not a featx store \({problem}"):
        FeatureStore(path)
    with pytest.raises(StoreError, match=problem):
        read_attrs(path)
    with pytest.raises(StoreError, match=problem):  # extract over it says the same
        prepare_store(path, dataset, _spec())


@pytest.mark.parametrize("content, problem", [(b"", "empty file"), (b"hello\n" * 40, "not an HDF5 file"),
                                              (None, "is a folder, not a store file")])
def test_files_that_are_not_stores_say_what_they_are(tmp_path, content, problem):
    path = tmp_path / "x.h5"
    path.mkdir() if content is None else path.write_bytes(content)
    with pytest.raises(StoreError, match=rf"x\.h5: {problem}"):
        FeatureStore(path)


class FailingDataset:
    """Stands for an h5py dataset on a full disk: every write raises what h5py raises there."""

    def __init__(self, exc: BaseException):
        self.exc = exc

    def __setitem__(self, index, value):
        raise self.exc


DISK_ERRORS = [
    (ValueError("Unable to synchronously write data (can't write)"), "cannot write"),
    (RuntimeError("Can't write data (file write failed: errno = 28, error message = 'No space "
                  "left on device')"), "disk full"),
    (OSError(errno.ENOSPC, "No space left on device"), "disk full"),
]


@pytest.mark.parametrize("exc, says", DISK_ERRORS, ids=["ValueError", "RuntimeError", "OSError"])
def test_full_disk_is_one_line_and_committed_rows_stay_valid(tmp_path, dataset, exc, says):
    path = tmp_path / "s.h5"
    prepare_store(path, dataset, StoreSpec(_spec().provenance, feature_dim=DIM, num_aug_views=0))
    writer = StoreWriter(path)
    writer.write_batch(0, 4, np.ones((4, DIM), np.float16), 0, None, {})
    writer.clean = FailingDataset(exc)
    with pytest.raises(StoreError, match=rf"s\.h5: writing rows failed: {says}.*re-run the same command"):
        writer.write_batch(4, 8, np.ones((4, DIM), np.float16), 0, None, {})
    writer.close()
    with FeatureStore(path) as st:  # what was committed is intact; the rest is resumable
        assert not st.complete and st.rows().tolist() == [0, 1, 2, 3]
        assert (st.read_clean([0, 3]) == 1).all()
    assert prepare_store(path, dataset, StoreSpec(_spec().provenance, DIM, 0)) == "resumed"


@pytest.mark.parametrize("exc, says", DISK_ERRORS, ids=["ValueError", "RuntimeError", "OSError"])
def test_full_disk_while_creating_leaves_no_file(tmp_path, dataset, monkeypatch, exc, says):
    import featx.store.schema

    def fail(tmp, dataset, spec):
        tmp.write_bytes(b"partial")
        raise exc

    monkeypatch.setattr(featx.store.schema, "write_layout", fail)
    with pytest.raises(StoreError, match=rf"s\.h5: creating the store failed: {says}"):
        prepare_store(tmp_path / "s.h5", dataset, _spec())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells"]  # the images only


def test_planned_size_is_what_creation_allocates_and_too_big_is_refused(tmp_path, dataset, monkeypatch):
    path = tmp_path / "s.h5"
    planned = planned_bytes(dataset, _spec())
    prepare_store(path, dataset, _spec())
    assert path.stat().st_size <= planned < path.stat().st_size + 2 * 2**20
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**12, 10**12, 10**7))
    with pytest.raises(StoreError, match=r"t\.h5: the store would take 32\.8 TB but .* has 10\.0 MB free"):
        check_room(tmp_path / "t.h5", 32_800 * 10**9)
    check_room(tmp_path / "t.h5", 1000, freed=10**9)  # replacing a big file frees its space


@pytest.fixture
def read_only():
    """make(folder): nobody may write in `folder` afterwards, root included (chattr +i where we
    are root); skips where this machine cannot make one."""
    made = []

    def make(folder: Path) -> Path:
        folder.chmod(0o555)
        if os.geteuid() == 0 and shutil.which("chattr"):
            if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
                made.append(folder)
        try:
            (folder / "probe").touch()
        except OSError:
            return folder
        (folder / "probe").unlink()
        pytest.skip("cannot make a read-only folder here")

    yield make
    for folder in made:
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
    for folder in made:
        folder.chmod(0o755)


def test_complete_store_in_a_read_only_folder_is_readable_without_the_lock(tmp_path, dataset, read_only):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "s.h5"
    prepare_store(path, dataset, _spec())
    _fill(path, dataset)
    read_only(folder)
    with FeatureStore(path) as st:
        assert st.complete and len(st.features("train")[0])
    assert is_complete(path, dataset, _spec())
    with pytest.raises(StoreError, match=r"s\.h5\.lock: cannot create the store's lock file"):
        StoreLock(path).acquire()  # a writer is told why, in one line


def test_augmented_rows_read_in_any_order(blob_store):
    with FeatureStore(blob_store) as st:
        view = st.read_aug(1)
        for ranks in ([0, 3, 7], [7, 3, 0], [4, 4, 1]):
            np.testing.assert_array_equal(st.read_aug(1, np.array(ranks)), view[ranks])
