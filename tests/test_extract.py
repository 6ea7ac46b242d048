"""featx.extraction: batched, deterministic, resumable extraction into a feature store."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from featx.backbones import create_backbone
from featx.backbones.cuts import trunk_for
from featx.data import DatasetOptions, open_dataset
from featx.errors import DataError
from featx.extraction import ExtractConfig, extract, plan_batches
from featx.data.images import image_to_tensor, load_image
from featx.store import FeatureStore
from featx.data.transforms import load_recipe, make_views, normalize
from tests.conftest import make_class_tree
from tests.test_store import read_only  # noqa: F401 (fixture)

SMALL = dict(weights="none", input_size=32, batch_size=5, views=2, aug="mild", workers=0)


@pytest.fixture
def dataset(class_tree):
    return open_dataset(class_tree, DatasetOptions(val_frac=0.0, test_frac=0.5))


def _arrays(path: Path) -> dict[str, np.ndarray]:
    """Everything a resumed run must reproduce exactly."""
    with h5py.File(path, "r") as f:
        out = {k: f[k][:] for k in ("features/clean", "features/aug", "done/clean", "done/aug",
                                     "failed/reason", "samples/label")}
        out["complete"] = np.array(f.attrs["complete"])
    return out


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_plan_batches_covers_every_image_once():
    is_train = np.array([1, 0, 1, 1, 0, 0, 1], dtype=bool)
    plan = plan_batches(is_train, views=2, batch_size=4)
    assert [(b.start, b.stop) for b in plan] == [(0, 2), (2, 3), (3, 5), (5, 7)]
    assert [(b.train_start, b.train_stop) for b in plan] == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert sum(b.images(2) for b in plan) == 7 + 2 * 4


def test_features_are_the_backbone_applied_to_each_view(tmp_path, dataset):
    r = extract(dataset, "tiny_features", tmp_path, ExtractConfig(**SMALL), show_progress=False)
    assert r.status == "created" and r.failed == 0
    assert r.images == len(dataset.samples) + 2 * sum(s.split == "train" for s in dataset.samples)
    backbone = create_backbone("tiny_features", "none", 0, 32)
    recipe = load_recipe("mild")
    with FeatureStore(r.store) as st:
        assert st.complete and st.attrs["dtype"] == "float16"
        train_row = int(np.flatnonzero(st.splits == "train")[1])
        sample = dataset.samples[train_row]
        img = image_to_tensor(load_image(dataset.abspath(sample)))
        views = make_views(img, backbone.preprocess, recipe, 0, sample.path, [0, 1, 2])
        with torch.inference_mode():
            expected = backbone.model(normalize(torch.stack(views), backbone.preprocess)).numpy()
        final = st.final_dim  # the backbone's own features; pooled block columns follow (test_pool)
        assert final == 16 and st.pool == trunk_for(backbone.model).default_pool
        clean = st.read_clean([train_row])[0]
        np.testing.assert_allclose(clean[:final], expected[0], rtol=4e-3, atol=1e-3)
        aug_row = int(np.flatnonzero(st.aug_rows == train_row)[0])
        for k in (0, 1):
            got = st.read_aug(k, [aug_row])[0]
            np.testing.assert_allclose(got[:final], expected[k + 1], rtol=4e-3, atol=1e-3)
        assert not np.allclose(expected[1], expected[2])


def test_same_command_same_numbers_whatever_the_workers(tmp_path, dataset):
    a = extract(dataset, "tiny_cnn", tmp_path / "a", ExtractConfig(**SMALL), show_progress=False)
    b = extract(dataset, "tiny_cnn", tmp_path / "b",
                ExtractConfig(**{**SMALL, "workers": 2}), show_progress=False)
    _assert_same(_arrays(Path(a.store)), _arrays(Path(b.store)))


def test_complete_store_is_a_no_op(tmp_path, dataset):
    first = extract(dataset, "tiny_cnn", tmp_path, ExtractConfig(**SMALL), show_progress=False)
    before = os.stat(first.store).st_mtime_ns
    again = extract(dataset, "tiny_cnn", tmp_path, ExtractConfig(**SMALL), show_progress=False)
    assert again.status == "complete" and again.images == 0
    assert os.stat(first.store).st_mtime_ns == before


def test_bad_images_are_skipped_and_recorded(tmp_path, class_tree):
    (class_tree / "ants" / "ants_03.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (class_tree / "bees" / "empty.png").write_bytes(b"")
    ds = open_dataset(class_tree, DatasetOptions(val_frac=0.0, test_frac=0.5))
    r = extract(ds, "tiny_cnn", tmp_path, ExtractConfig(**SMALL), show_progress=False)
    assert r.failed == 2
    with FeatureStore(r.store) as st:
        assert st.complete
        failed = {st.paths[i]: reason for i, reason in st.failed.items()}
        assert set(failed) == {"ants/ants_03.png", "bees/empty.png"}
        assert failed["bees/empty.png"] == "empty file (0 bytes)"
        X, _ = st.features()
        assert len(X) == len(ds.samples) - 2 and np.abs(X).sum(1).min() > 0


def _command(data: Path, out: Path, engine: str = "auto") -> list[str]:
    """`featx extract`'s arguments (after `featx`)."""
    return ["extract", str(data), "-b", "tiny_cnn", "--engine", engine,
            "--weights", "none", "--input-size", "48", "--batch-size", "2", "--views", "1",
            "--aug", "flowers", "--workers", "0", "--out", str(out), "--val-frac", "0",
            "--test-frac", "0.5"]


def _run_killed(args: list[str], batch: int, stage: str, log: Path) -> None:
    """`featx ARGS` in a process of its own, run to its SIGKILL at `stage` of its `batch`-th
    batch (tests/kill_point.py): no cleanup, no atexit, no last flush, as after the OOM killer.

    The process is forked from this one rather than started: the killed run is the same command
    line (featx.cli.main), and a new interpreter would add 5-9 s of imports to each kill. torch
    runs on one thread here (conftest.py), so the fork holds no thread pool that a child could
    find locked."""
    import tests.kill_point
    from featx.cli import main

    pid = os.fork()
    if pid == 0:  # the child: it must never return into pytest
        try:
            with open(log, "w") as out:
                os.dup2(out.fileno(), 1)
                os.dup2(out.fileno(), 2)
            tests.kill_point._install(batch, stage)
            sys.argv = ["featx", *args]
            main()
        except BaseException:  # noqa: BLE001 (any end but the SIGKILL is reported by the parent)
            import traceback

            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert killed, f"the run was not killed (status {status}): {log.read_text()[-2000:]}"


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["torch", "onnxruntime"])
def test_sigkill_twice_then_resume_equals_uninterrupted(tmp_path, engine, one_thread):
    data = make_class_tree(tmp_path / "data", per_class=8, seed=3)
    args = _command(data, tmp_path / "killed", engine)
    _run_killed(args, batch=3, stage="rows", log=tmp_path / "first.log")  # batch 3's rows on disk, not marked done
    (store,) = (tmp_path / "killed").glob("*.h5")
    with FeatureStore(store) as st:
        assert not st.complete
    first = read_done_count(store)
    assert 0 < first < 16
    with h5py.File(store, "r") as f:  # killed between the two flushes of a batch's commit
        written = np.abs(f["features/clean"][:].astype(np.float32)).sum(1) > 0
        assert (written & (f["done/clean"][:] == 0)).any()
    _run_killed(args, batch=2, stage="before", log=tmp_path / "second.log")  # a resumed run, killed again
    assert first < read_done_count(store) < 16
    # The same settings as _command, through the Python API: the CLI maps them to these
    ds = open_dataset(data, DatasetOptions(val_frac=0.0, test_frac=0.5))
    cfg = ExtractConfig(engine=engine, weights="none", input_size=48, batch_size=2, views=1,
                        aug="flowers", workers=0)
    resumed = extract(ds, "tiny_cnn", tmp_path / "killed", cfg, show_progress=False)
    assert resumed.status == "resumed" and Path(resumed.store) == store
    clean = extract(ds, "tiny_cnn", tmp_path / "clean", cfg, show_progress=False)
    assert clean.status == "created"
    _assert_same(_arrays(store), _arrays(Path(clean.store)))
    with FeatureStore(store) as st:
        assert st.attrs["engine"] == engine


def test_dead_worker_is_one_clear_error_and_the_run_resumes(tmp_path, dataset, monkeypatch):
    import multiprocessing

    import featx.extraction
    from featx.errors import FeatxError
    from featx.store import StoreWriter

    cfg = ExtractConfig(**{**SMALL, "workers": 2})
    original = featx.extraction.BatchDecoder.__getitem__
    write_batch = StoreWriter.write_batch
    fork = multiprocessing.get_context("fork")  # the DataLoader forks its workers: they share these
    committed, changed = fork.Value("i", 0), fork.Condition()

    def commits(self, *args, **kwargs):
        write_batch(self, *args, **kwargs)
        with changed:
            committed.value += 1
            changed.notify_all()

    def dies_on_batch_3(self, i):
        if self.batches[i].start >= 6:
            # Once the batches before the first dying one are in the store: every batch a worker
            # made before was received (one that dies with a batch in the queue is another
            # failure), and the resume has work left.
            first = next(j for j, b in enumerate(self.batches) if b.start >= 6)
            with changed:
                changed.wait_for(lambda: committed.value >= first, timeout=120)
            os._exit(3)  # a worker killed by the OOM killer looks like this
        return original(self, i)

    monkeypatch.setattr(StoreWriter, "write_batch", commits)
    monkeypatch.setattr(featx.extraction.BatchDecoder, "__getitem__", dies_on_batch_3)
    with pytest.raises(FeatxError, match="data loading worker failed.*re-run the same command"):
        extract(dataset, "tiny_cnn", tmp_path / "a", cfg, show_progress=False)
    monkeypatch.setattr(featx.extraction.BatchDecoder, "__getitem__", original)
    monkeypatch.setattr(StoreWriter, "write_batch", write_batch)
    (store,) = (tmp_path / "a").glob("*.h5")
    assert read_done_count(store) > 0
    resumed = extract(dataset, "tiny_cnn", tmp_path / "a", cfg, show_progress=False)
    clean = extract(dataset, "tiny_cnn", tmp_path / "b", cfg, show_progress=False)
    assert resumed.status == "resumed"
    _assert_same(_arrays(Path(resumed.store)), _arrays(Path(clean.store)))


def read_done_count(store: Path) -> int:
    with h5py.File(store, "r") as f:
        return int(f["done/clean"][:].sum())


def test_truncated_store_is_a_clear_error(tmp_path, dataset):
    from featx.errors import StoreError

    r = extract(dataset, "tiny_cnn", tmp_path, ExtractConfig(**SMALL), show_progress=False)
    data = Path(r.store).read_bytes()
    Path(r.store).write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError, match="unreadable or corrupt store.*--overwrite"):
        extract(dataset, "tiny_cnn", tmp_path, ExtractConfig(**SMALL), show_progress=False)
    again = extract(dataset, "tiny_cnn", tmp_path, ExtractConfig(**{**SMALL, "overwrite": True}),
                    show_progress=False)
    assert again.status == "created"


def test_other_settings_against_an_existing_store_are_refused(tmp_path, dataset):
    from featx.errors import StoreError

    r = extract(dataset, "tiny_cnn", tmp_path, ExtractConfig(**SMALL), show_progress=False)
    with pytest.raises(StoreError, match="seed is 0 in the store, 1 requested"):
        extract(dataset, "tiny_cnn", tmp_path, ExtractConfig(**{**SMALL, "seed": 1}),
                store_path=Path(r.store), show_progress=False)
    again = extract(dataset, "tiny_cnn", tmp_path,
                    ExtractConfig(**{**SMALL, "seed": 1, "overwrite": True}),
                    store_path=Path(r.store), show_progress=False)
    assert again.status == "created"


def test_device_decode_path_matches_pillow(tmp_path, monkeypatch):
    """The nvjpeg path's logic, run with torchvision's CPU JPEG decoder: JPEGs decoded in the
    main process (EXIF applied, bad files recorded), other formats from the workers."""
    import featx.extraction.job
    from PIL import Image

    root = make_class_tree(tmp_path / "d", per_class=5, seed=2, ext=".jpg")
    make_class_tree(tmp_path / "d", per_class=1, seed=9, ext=".png")
    rotated = Image.open(root / "ants" / "ants_01.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated.save(root / "ants" / "ants_01.jpg", exif=exif, quality=95)
    data = (root / "bees" / "bees_02.jpg").read_bytes()
    (root / "bees" / "bees_02.jpg").write_bytes(data[: len(data) // 3])
    ds = open_dataset(root, DatasetOptions(val_frac=0.0, test_frac=0.5))
    cfg = ExtractConfig(**{**SMALL, "dtype": "float32"})
    pil = extract(ds, "tiny_cnn", tmp_path / "pil", cfg, show_progress=False)
    monkeypatch.setattr(featx.extraction.job, "use_device_decode", lambda device, decode: True)
    dev = extract(ds, "tiny_cnn", tmp_path / "dev", cfg, show_progress=False)
    a, b = _arrays(Path(pil.store)), _arrays(Path(dev.store))
    np.testing.assert_array_equal(a["failed/reason"] != b"", b["failed/reason"] != b"")
    assert pil.failed == 1
    np.testing.assert_array_equal(a["done/aug"], b["done/aug"])
    np.testing.assert_allclose(a["features/clean"], b["features/clean"], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(a["features/aug"], b["features/aug"], rtol=1e-3, atol=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_gpu_decode_resumed_equals_uninterrupted(tmp_path):
    data = make_class_tree(tmp_path / "data", per_class=12, seed=5, ext=".jpg")
    ds = open_dataset(data, DatasetOptions(val_frac=0.0, test_frac=0.5))
    cfg = ExtractConfig(**{**SMALL, "device": "cuda", "decode": "gpu", "workers": 2})
    full = extract(ds, "tiny_cnn", tmp_path / "full", cfg, show_progress=False)
    partial_cfg = cfg
    part = extract(ds, "tiny_cnn", tmp_path / "part", partial_cfg, show_progress=False)
    with h5py.File(part.store, "r+") as f:  # forget the second half, as a kill would
        n = f["done/clean"].shape[0]
        f["done/clean"][n // 2:] = 0
        f["done/aug"][:, :] = 0
        f.attrs.modify("complete", np.uint8(0))
    resumed = extract(ds, "tiny_cnn", tmp_path / "part", cfg, show_progress=False)
    assert resumed.status == "resumed"
    _assert_same(_arrays(Path(full.store)), _arrays(Path(part.store)))
    with FeatureStore(full.store) as st:
        assert st.attrs["decode"] == "gpu" and np.isfinite(st.features()[0]).all()


# --- issue 17: resource bombs and output folders, refused before any work --------------------

def _no_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_a_store_bigger_than_the_free_space_is_refused_before_anything_is_created(
        tmp_path, dataset, monkeypatch):
    import shutil

    from featx.errors import StoreError

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**12, 10**12, 5 * 10**6))
    out = tmp_path / "stores"
    with pytest.raises(StoreError, match=r"the store would take [\d.]+ MB but .* has 5\.0 MB free; "
                                         r"lower --views"):
        extract(dataset, "tiny_cnn", out, ExtractConfig(**{**SMALL, "views": 1000}), show_progress=False)
    assert not out.exists()  # not even the folder or the lock file


@pytest.mark.parametrize("field, value", [("views", 10**9), ("views", -1), ("input_size", 100_000),
                                          ("input_size", 0), ("batch_size", 0), ("threads", 0),
                                          ("dtype", "float8"), ("engine", "gpu-magic")])
def test_absurd_options_are_refused_by_the_config(field, value):
    from featx.errors import ConfigError

    with pytest.raises(ConfigError, match=field):
        ExtractConfig(**{field: value})


def test_out_that_is_a_file_fails_at_once(tmp_path, dataset):
    from featx.errors import ConfigError

    (tmp_path / "out").write_text("x")  # a usage error (exit 2 on the command line)
    with pytest.raises(ConfigError, match=r"--out .*out: exists and is not a folder"):
        extract(dataset, "tiny_cnn", tmp_path / "out", ExtractConfig(**SMALL), show_progress=False)


def test_read_only_out_fails_at_once_with_no_partial_files(tmp_path, dataset, read_only, monkeypatch):
    import featx.extraction.store_run
    from featx.errors import StoreError

    def never(*args, **kwargs):
        raise AssertionError("the engine was built before the folder was checked")

    monkeypatch.setattr(featx.extraction.store_run, "engine_for", never)
    (tmp_path / "ro").mkdir()
    out = read_only(tmp_path / "ro")
    with pytest.raises(StoreError, match=r"--out .*ro: cannot write in"):
        extract(dataset, "tiny_cnn", out, ExtractConfig(**SMALL), show_progress=False)
    assert _no_files(out) == []


def test_a_leftover_temp_file_of_a_killed_run_is_swept(tmp_path, dataset):
    first = extract(dataset, "tiny_cnn", tmp_path, ExtractConfig(**SMALL), show_progress=False)
    Path(first.store).unlink()
    stale = Path(first.store + ".tmp-999999")
    stale.write_bytes(b"half a store")
    again = extract(dataset, "tiny_cnn", tmp_path, ExtractConfig(**SMALL), show_progress=False)
    assert again.status == "created" and not stale.exists()


def test_a_complete_store_in_a_read_only_folder_is_used_by_every_reader(tmp_path, class_tree, read_only):
    from typer.testing import CliRunner

    from featx.cli import app

    dataset = open_dataset(class_tree, DatasetOptions(val_frac=0.25, test_frac=0.25))
    first = extract(dataset, "tiny_cnn", tmp_path / "ro", ExtractConfig(**SMALL), show_progress=False)
    assert not Path(first.store + ".lock").exists()  # the lock went with its writer
    read_only(tmp_path / "ro")
    again = extract(dataset, "tiny_cnn", tmp_path / "ro", ExtractConfig(**SMALL), show_progress=False)
    assert again.status == "complete"  # no writer lock needed to see that
    runner = CliRunner()
    info = runner.invoke(app, ["info", first.store])
    assert info.exit_code == 0 and "complete" in info.stdout, info.stderr
    head = runner.invoke(app, ["train-head", first.store, "--out", str(tmp_path / "heads"), "--epochs", "2"])
    assert head.exit_code == 0, head.stderr
    # nothing was written there: the store and the marker of featx's output folder, as before
    assert _no_files(tmp_path / "ro") == sorted([".featx-output", Path(first.store).name])


def test_a_class_that_loses_every_training_image_is_named(tmp_path):
    """The store is made (the other class is usable), and the empty class is a warning."""
    root = make_class_tree(tmp_path / "d", per_class=6)
    for path in (root / "bees").iterdir():
        path.write_bytes(b"not an image")
    ds = open_dataset(root, DatasetOptions(val_frac=0.0, test_frac=0.0))
    result = extract(ds, "tiny_cnn", tmp_path / "s", ExtractConfig(weights="none", workers=0),
                     show_progress=False)
    assert result.failed == 6 and Path(result.store).exists()
    assert result.warnings == ["class 'bees' has no usable training image (6 of 6 failed to decode)"]


def test_a_dataset_where_nothing_decodes_leaves_no_store(tmp_path):
    root = make_class_tree(tmp_path / "d", per_class=3)
    for path in root.rglob("*.png"):
        path.write_bytes(b"")
    ds = open_dataset(root, DatasetOptions(val_frac=0.0, test_frac=0.0))
    with pytest.raises(DataError, match="none of the 6 images could be decoded"):
        extract(ds, "tiny_cnn", tmp_path / "s", ExtractConfig(weights="none", workers=0), show_progress=False)
    assert not list((tmp_path / "s").glob("*.h5"))


def test_weights_none_is_random_init_as_in_torchvision(tmp_path, dataset):
    a = extract(dataset, "tiny_cnn", tmp_path / "a", weights=None, workers=0, show_progress=False)
    b = extract(dataset, "tiny_cnn", tmp_path / "b", weights="none", workers=0, show_progress=False)
    assert Path(a.store).name == Path(b.store).name and "-init0" in Path(a.store).name
    with FeatureStore(a.store) as sa, FeatureStore(b.store) as sb:
        np.testing.assert_array_equal(sa.features()[0], sb.features()[0])


def test_pool_is_resolved_once_per_extract_even_when_it_updates(tmp_path, class_tree, monkeypatch):
    """The job resolves --pool auto once; the engine, the store's record and an update's delta
    store reuse it (they resolved it again, up to four times)."""
    import featx.extraction.engine_choice as choice
    from tests.conftest import write_image

    asked = []
    resolve = choice.pool_block
    monkeypatch.setattr(choice, "pool_block", lambda *a, **k: asked.append(a[1]) or resolve(*a, **k))
    config = ExtractConfig(**{**SMALL, "views": 0}, engine="torch")
    options = DatasetOptions(val_frac=0.0, test_frac=0.5)
    first = extract(open_dataset(class_tree, options), "tiny_features", tmp_path, config, show_progress=False)
    assert asked == ["auto"]
    write_image(class_tree / "ants" / "ants_new.png", seed=999)
    asked.clear()
    second = extract(open_dataset(class_tree, options), "tiny_features", tmp_path, config, show_progress=False)
    assert second.status == "updated" and second.store == first.store and asked == ["auto"]
    with FeatureStore(second.store) as store:
        block = trunk_for(create_backbone("tiny_features", None, 0).model).default_pool
        assert store.attrs["pool"] == block and len(store.paths) == 13
