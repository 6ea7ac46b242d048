"""Packaged datasets opened by name: Fashion-MNIST (Debian's dataset-fashion-mnist) as PNGs + manifest."""

from __future__ import annotations

import gzip
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import featx.data.packaged as packaged
from featx.data import open_dataset
from featx.data.packaged import (FASHION_MNIST_FILES, dataset_cache, fashion_mnist_source,
                                 materialize_fashion_mnist, packaged_datasets, read_idx)
from featx.errors import DataError
from tests.conftest import make_class_tree


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def fake_fashion_mnist(folder: Path, train: int = 9, test: int = 6, seed: int = 0) -> Path:
    """Four IDX files like the Debian package's, classes 0, 1, 2 in turn."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", train), ("test", test)):
        images_file, labels_file = FASHION_MNIST_FILES[split]
        write_idx(folder / images_file, rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / labels_file, np.arange(n) % 3)
    return folder


@pytest.fixture
def fake_source(tmp_path, monkeypatch) -> Path:
    source = fake_fashion_mnist(tmp_path / "share" / "fashion-mnist")
    monkeypatch.setattr(packaged, "fashion_mnist_dirs", lambda: [source])
    monkeypatch.setenv("FEATX_CACHE", str(tmp_path / "cache"))  # each test its own cache
    return source


def test_fashion_mnist_opens_by_name_as_pngs_with_the_published_split(fake_source):
    ds = open_dataset("fashion-mnist")
    assert ds.name == "fashion-mnist" and ds.layout == "manifest"
    assert ds.root == dataset_cache("fashion-mnist").resolve()
    assert ds.classes == ["0", "1", "2"] and ds.display_names == ["T-shirt/top", "Trouser", "Pullover"]
    assert {split: sum(c.values()) for split, c in ds.counts().items()} == {"train": 9, "test": 6}
    images = read_idx(fake_source / "t10k-images-idx3-ubyte.gz", 3)
    sample = next(s for s in ds.samples if s.path == "test/00004.png")
    assert sample.label == 4 % 3 and sample.split == "test"
    with Image.open(ds.abspath(sample)) as img:  # lossless: the PNG holds the array's pixels
        assert img.mode == "L" and np.array_equal(np.asarray(img), images[4])


def test_the_cache_is_written_once_and_rebuilt_when_the_arrays_change(fake_source):
    manifest = open_dataset("fashion-mnist").root / "manifest.csv"
    first = manifest.stat().st_mtime_ns
    assert len(open_dataset("fashion-mnist").samples) == 15 and manifest.stat().st_mtime_ns == first
    fake_fashion_mnist(fake_source, train=12, test=3, seed=1)  # a new package version
    assert len(open_dataset("fashion-mnist").samples) == 15 and manifest.stat().st_mtime_ns != first
    assert {s.split for s in open_dataset("fashion-mnist").samples} == {"train", "test"}
    assert sorted(p.name for p in dataset_cache("fashion-mnist").parent.iterdir()) == ["fashion-mnist"]


def test_a_killed_build_leaves_no_dataset_and_is_swept(fake_source, monkeypatch):
    cache = dataset_cache("fashion-mnist")
    dead = cache.with_name("fashion-mnist.tmp-999999999")  # no such process
    (dead / "train").mkdir(parents=True)

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(packaged, "_move_into_place", killed)
    with pytest.raises(KeyboardInterrupt):
        open_dataset("fashion-mnist")
    assert not cache.exists() and not dead.exists()
    assert list(cache.parent.iterdir()) == []  # its own temporary folder went too


def test_looking_up_names_or_opening_a_folder_converts_nothing(fake_source, tmp_path):
    assert "fashion-mnist" in packaged_datasets() and "fashion-mnist" in sorted(packaged_datasets())
    open_dataset(make_class_tree(tmp_path / "tree"))
    assert not dataset_cache("fashion-mnist").exists()


def test_no_fashion_mnist_without_its_files(tmp_path, monkeypatch):
    monkeypatch.setattr(packaged, "fashion_mnist_dirs", lambda: [tmp_path])
    assert fashion_mnist_source() is None and "fashion-mnist" not in packaged_datasets()
    with pytest.raises(DataError, match="fashion-mnist: no such file or folder"):
        open_dataset("fashion-mnist")


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(gzip.compress(b"\0\0\x08\x03\0\0\0\x02\0\0\0\x1c\0\0\0\x1c" + b"\0" * 100)),
     r"100 data bytes, the header \(2, 28, 28\) says 1568"),
    (lambda p: p.write_bytes(gzip.compress(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)), "not an IDX file"),
    (lambda p: p.write_bytes(b"not gzip at all"), "cannot read IDX array"),
])
def test_a_damaged_array_is_one_line_naming_the_file(fake_source, damage, message):
    damage(fake_source / "train-images-idx3-ubyte.gz")
    with pytest.raises(DataError, match=message) as err:
        open_dataset("fashion-mnist")
    assert "train-images-idx3-ubyte.gz" in str(err.value) and "\n" not in str(err.value)
    assert not dataset_cache("fashion-mnist").exists()


def test_images_and_labels_that_disagree(fake_source):
    write_idx(fake_source / "t10k-labels-idx1-ubyte.gz", np.zeros(5))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz holds 6 images, "
                                        "t10k-labels-idx1-ubyte.gz 5 labels"):
        open_dataset("fashion-mnist")


def test_an_unwritable_cache_says_which_folder_and_what_to_set(fake_source, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(DataError, match="cannot write the Fashion-MNIST PNG cache.*FEATX_CACHE"):
        materialize_fashion_mnist(fake_source, blocker / "fashion-mnist")


@pytest.mark.skipif(fashion_mnist_source() is None, reason="Fashion-MNIST is not installed: "
                    "apt-get install dataset-fashion-mnist (Debian) puts it in /usr/share/datasets")
def test_the_installed_fashion_mnist(tmp_path, monkeypatch):
    """The Debian package's own arrays hold the published split; its first images (real bytes,
    cut to 300 + 100 so that no test writes 70,000 PNGs) open by name with the published names."""
    source = fashion_mnist_source()
    (tmp_path / "share").mkdir()
    for split, per_class in (("train", 6000), ("test", 1000)):
        images_file, labels_file = FASHION_MNIST_FILES[split]
        images, labels = read_idx(source / images_file, 3), read_idx(source / labels_file, 1)
        images_train = images if split == "train" else images_train
        assert images.shape == (10 * per_class, 28, 28) and Counter(labels.tolist()) == {c: per_class for c in range(10)}
        write_idx(tmp_path / "share" / images_file, images[: 300 if split == "train" else 100])
        write_idx(tmp_path / "share" / labels_file, labels[: 300 if split == "train" else 100])
    monkeypatch.setattr(packaged, "fashion_mnist_dirs", lambda: [tmp_path / "share"])
    monkeypatch.setenv("FEATX_CACHE", str(tmp_path / "cache"))
    ds = open_dataset("fashion-mnist")
    assert len(ds.samples) == 400 and len(ds.classes) == 10
    assert ds.display_names[0] == "T-shirt/top" and ds.display_names[9] == "Ankle boot"
    counts = ds.counts()
    assert sum(counts["train"].values()) == 300 and sum(counts["test"].values()) == 100
    last = [s for s in ds.samples if s.split == "train"][-1]  # train/00299.png
    with Image.open(ds.root / last.path) as png:  # the PNG holds the array's very pixels
        np.testing.assert_array_equal(np.asarray(png), images_train[int(Path(last.path).stem)])
