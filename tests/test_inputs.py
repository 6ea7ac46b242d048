"""Issue 18, inputs at scale: WebDataset tar shards, `datasets` saved to disk and Parquet give the
same store (features, labels, splits, every table) as the same images in a folder tree."""

from __future__ import annotations

import io
import os
import signal
import tarfile
from pathlib import Path

import h5py
import pytest

from featx.data import DatasetOptions, open_dataset
from featx.errors import DataError
from featx.extraction import extract
from tests.conftest import assert_same_store, make_class_tree
from tests.kill_point import _install as install_kill_point

wds = pytest.importorskip("webdataset")
datasets = pytest.importorskip("datasets")

TINY = dict(weights="none", batch_size=8, views=2, aug="mild", workers=0, engine="torch")
CLASSES = ("ants", "bees", "wasps")


def _assert_same_store(a: Path, b: Path) -> None:
    """Every table equal, but the files' mtimes (unpacked files carry their archive's)."""
    assert_same_store(a, b, ignore=("samples/mtime_ns",))


def _images(tree: Path) -> list[tuple[str, bytes, str]]:
    """(key, bytes, class) of every image of a class tree, keys as the tree's paths."""
    return [(p.relative_to(tree).with_suffix("").as_posix(), p.read_bytes(), p.parent.name)
            for p in sorted(tree.rglob("*.png"))]


def write_shards(tree: Path, out: Path, shards: int = 2, names=None) -> Path:
    out.mkdir(parents=True)
    images = _images(tree)
    for s in range(shards):
        name = names[s] if names else f"shard-{s:06d}.tar"
        with wds.TarWriter(str(out / name)) as sink:
            for key, data, label in images[s::shards]:
                sink.write({"__key__": key, "png": data, "cls": label, "json": b"{}"})
    return out


def write_hf(tree: Path, out: Path, as_dict: bool = False) -> Path:
    images = _images(tree)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(CLASSES)),
                                  "key": datasets.Value("string")})
    table = datasets.Dataset.from_dict(
        {"image": [{"bytes": b, "path": None} for _, b, _ in images],
         "label": [CLASSES.index(c) for _, _, c in images], "key": [k for k, _, _ in images]},
        features=features)
    if as_dict:
        table = datasets.DatasetDict(train=table.select(range(0, len(images), 2)),
                                     test=table.select(range(1, len(images), 2)))
    table.save_to_disk(str(out))
    return out


@pytest.fixture
def tree(tmp_path):
    return make_class_tree(tmp_path / "tree" / "insects", classes=CLASSES, per_class=7, seed=5)


def _store(data: Path, out: Path) -> Path:
    return Path(extract(open_dataset(data), "tiny_cnn", out, show_progress=False, **TINY).store)


def test_webdataset_shards_give_the_folder_trees_store(tree, tmp_path):
    shards = write_shards(tree, tmp_path / "insects")
    ds = open_dataset(shards)
    assert ds.name == "insects" and ds.classes == list(CLASSES) and len(ds.samples) == 21
    assert [s.path for s in ds.samples] == [s.path for s in open_dataset(tree).samples]
    _assert_same_store(_store(shards, tmp_path / "s1"), _store(tree, tmp_path / "s2"))


def test_a_saved_dataset_and_parquet_give_the_folder_trees_store(tree, tmp_path):
    reference = _store(tree, tmp_path / "s0")
    saved = write_hf(tree, tmp_path / "hf" / "insects")
    _assert_same_store(_store(saved, tmp_path / "s1"), reference)
    parquet = tmp_path / "pq" / "insects.parquet"
    parquet.parent.mkdir()
    datasets.load_from_disk(str(saved)).to_parquet(str(parquet))
    _assert_same_store(_store(parquet, tmp_path / "s2"), reference)


def test_splits_come_from_a_dataset_dict_or_shard_names(tree, tmp_path):
    ds = open_dataset(write_hf(tree, tmp_path / "hf", as_dict=True))
    assert {s.split for s in ds.samples} == {"train", "test"}
    assert sum(s.split == "train" for s in ds.samples) == 11
    ds = open_dataset(write_shards(tree, tmp_path / "w", 2, ["train-000.tar", "val-000.tar"]))
    assert sorted(s.split for s in ds.samples) == ["train"] * 11 + ["val"] * 10


def test_the_unpacked_folder_is_reused_until_the_shards_change(tree, tmp_path):
    shards = write_shards(tree, tmp_path / "insects")
    first = open_dataset(shards)
    manifest = first.root / "manifest.csv"
    stamp = manifest.stat().st_mtime_ns
    assert open_dataset(shards).fingerprint == first.fingerprint and manifest.stat().st_mtime_ns == stamp
    with wds.TarWriter(str(shards / "shard-000002.tar")) as sink:
        sink.write({"__key__": "ants/extra", "png": (tree / "ants" / "ants_00.png").read_bytes(), "cls": "ants"})
    assert len(open_dataset(shards).samples) == 22


def test_archives_that_cannot_be_used_say_why(tree, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.tar").write_bytes(b"not a tar file at all" * 100)
    with pytest.raises(DataError, match="not a readable WebDataset tar shard"):
        open_dataset(bad)
    dup = write_shards(tree, tmp_path / "dup", 1)
    with wds.TarWriter(str(dup / "shard-000001.tar")) as sink:
        sink.write({"__key__": "ants/ants_00", "png": b"\x89PNG", "cls": "ants"})
    with pytest.raises(DataError, match="appears twice"):
        open_dataset(dup)
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("../../escape.png")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"\x89PNG"))
    with pytest.raises(DataError, match="cannot name a file"):
        open_dataset(evil)
    assert not (tmp_path.parent / "escape.png").exists()
    table = datasets.Dataset.from_dict({"text": ["a", "b"]})
    table.save_to_disk(str(tmp_path / "noimg"))
    with pytest.raises(DataError, match="no image column"):
        open_dataset(tmp_path / "noimg")
    with pytest.raises(DataError, match="no label column 'kind'"):
        open_dataset(write_hf(tree, tmp_path / "hf"), DatasetOptions(label_col="kind"))


KILLED = dict(engine="torch", weights="none", input_size=48, batch_size=2, views=1, workers=0)


def _extract_killed_at(data: Path, out: Path, batch: int, stage: str) -> int:
    """extract(data) in a forked child that SIGKILLs itself at `stage` of write_batch #`batch`
    (tests/kill_point.py): a real kill of a real process, without a new interpreter importing
    torch (5-6 s a run on the 2-core box). The child's wait status."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            install_kill_point(batch, stage)
            extract(open_dataset(data), "tiny_cnn", out, show_progress=False, **KILLED)
        finally:
            os._exit(1)  # not killed (or it raised, traceback above): the parent's assert fails
    return os.waitpid(pid, 0)[1]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["webdataset", "datasets"])
def test_a_killed_extraction_of_an_archive_resumes_to_the_same_store(tree, tmp_path, kind, one_thread):
    data = (write_shards(tree, tmp_path / "a" / "insects") if kind == "webdataset"
            else write_hf(tree, tmp_path / "a" / "insects"))
    out = tmp_path / "killed"
    status = _extract_killed_at(data, out, 3, "rows")  # between the two flushes of its third batch
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    (store,) = out.glob("*.h5")
    with h5py.File(store, "r") as f:
        assert 0 < f["done/clean"][:].sum() < len(f["done/clean"])
    resumed = extract(open_dataset(data), "tiny_cnn", out, show_progress=False, **KILLED)
    assert resumed.status == "resumed" and Path(resumed.store) == store
    calm = extract(open_dataset(tree), "tiny_cnn", tmp_path / "calm", show_progress=False, **KILLED)
    assert calm.status == "created"
    _assert_same_store(next(out.glob("*.h5")), next((tmp_path / "calm").glob("*.h5")))
