"""Shared fixtures: small image trees that the tests write themselves, and `tiny_cnn`
(tests/tiny_backbone.py), a random-init backbone for tests of the machinery, not of a network."""

from __future__ import annotations

import os
from pathlib import Path

# torch runs on one thread in the tests and in their subprocesses (they inherit the variable). On
# a machine whose cores are shared (two pytest-xdist workers on 2 cores, or other jobs) torch's
# intra-op threads spin: a tiny_cnn step measured 0.15 s with 2 threads against 0.01 s with 1 on
# the loaded 2-core dev box. The machinery under test is the same at any thread count, and a
# test's store then equals its subprocess's bit for bit. FEATX_TEST_THREADS overrides it.
os.environ["OMP_NUM_THREADS"] = os.environ.get("FEATX_TEST_THREADS", "1")
os.environ["MKL_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"]

import numpy as np
import pytest

from tests.image_trees import make_class_tree, write_image  # noqa: F401 (tests import them from here)
from tests.tiny_backbone import tiny_cnn  # noqa: F401 (registers the tiny_cnn backbone)

# Property tests draw the same examples on every run (CI included): a failure is reproducible,
# never a coin toss. HYPOTHESIS_PROFILE=explore draws new ones while you work.
from hypothesis import settings  # noqa: E402

settings.register_profile("deterministic", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))


@pytest.fixture(autouse=True, scope="session")
def torch_threads():
    """The thread count above, also when a plugin imported torch before this file was read."""
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    yield


@pytest.fixture(autouse=True, scope="session")
def onnx_cache(tmp_path_factory):
    """Exported ONNX files go to a per-run cache, shared by the tests, never ~/.cache."""
    import os

    folder = tmp_path_factory.mktemp("featx-cache")
    old = os.environ.get("FEATX_CACHE")
    os.environ["FEATX_CACHE"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("FEATX_CACHE", None)
    else:
        os.environ["FEATX_CACHE"] = old


@pytest.fixture
def one_thread():
    """This process runs torch on one thread, as subprocesses given OMP_NUM_THREADS=1 do, so that
    their stores compare with this process's bit for bit."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def class_tree(tmp_path: Path) -> Path:
    """One ImageFolder: 2 classes x 6 images."""
    return make_class_tree(tmp_path / "cells")


@pytest.fixture
def split_tree(tmp_path: Path) -> Path:
    """train/ and val/ with class folders, like the hymenoptera tutorial."""
    root = tmp_path / "hymenoptera"
    make_class_tree(root / "train", per_class=4, seed=0)
    make_class_tree(root / "val", per_class=2, seed=50)
    return root


def make_feature_store(path: Path, n_per_class: int = 40, dim: int = 16, classes=("a", "b", "c"),
                       views: int = 2, seed: int = 0, separation: float = 3.0,
                       splits=("train", "train", "val", "test")) -> Path:
    """A complete feature store of Gaussian blobs (one per class), written without images.

    Splits cycle through `splits`; augmented views are the clean features plus noise.
    """
    from featx.data import Dataset, Sample
    from featx.store import StoreSpec, StoreWriter, prepare_store

    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(len(classes), dim)) * separation
    samples, feats = [], []
    for i in range(n_per_class * len(classes)):
        label = i % len(classes)
        split = splits[(i // len(classes)) % len(splits)]
        samples.append(Sample(f"img/{i:05d}.png", label, split, 100, i))
        feats.append(centers[label] + rng.normal(size=dim))
    feats = np.array(feats, dtype=np.float32)
    dataset = Dataset(path.parent, "blobs", "manifest", samples, list(classes), list(classes))
    spec = StoreSpec(provenance={
        "backbone": "resnet18", "weights": {"source": "random-init(seed=0)"},
        "weights_sha256": "random-init(seed=0)", "input_size": 32,
        "transform": {"clean": {"input_size": 32, "resize_size": 37, "mean": [0.485, 0.456, 0.406],
                                "std": [0.229, 0.224, 0.225], "interpolation": "bilinear"},
                      "aug": None, "views": views},
        "seed": 0, "device": "cpu", "engine": "torch", "batch_size": 64, "decode": "cpu", "amp": "off"},
        feature_dim=dim, num_aug_views=views, dtype="float32")
    prepare_store(path, dataset, spec)
    train = [i for i, s in enumerate(samples) if s.split == "train"]
    aug = np.stack([feats[train] + rng.normal(size=(len(train), dim)).astype(np.float32) * 0.3
                    for _ in range(views)]) if views else None
    writer = StoreWriter(path)
    writer.write_batch(0, len(samples), feats, 0, aug, {})
    writer.finish(1.0, 1.0)
    writer.close()
    return path


@pytest.fixture
def blob_store(tmp_path: Path) -> Path:
    return make_feature_store(tmp_path / "blobs.h5")


def store_tables(path: Path) -> dict[str, np.ndarray]:
    """Every table of a store (attributes aside: they record its history), read with plain h5py."""
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, node: out.__setitem__(name, node[()])
                     if isinstance(node, h5py.Dataset) else None)
    return out


def assert_same_store(a: Path, b: Path, ignore: tuple[str, ...] = ()) -> None:
    """Stores `a` and `b` hold the same tables, equal value for value (but the `ignore`d ones)."""
    ta, tb = store_tables(a), store_tables(b)
    assert ta.keys() == tb.keys() and "features/clean" in ta
    for name in sorted(set(ta) - set(ignore)):
        np.testing.assert_array_equal(ta[name], tb[name], err_msg=name)
