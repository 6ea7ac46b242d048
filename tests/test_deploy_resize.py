"""Stores and the resize (issue 29): a new store resizes with Pillow (the pixels of a Pillow-only
client, tests/test_deploy.py); a store made before (torchvision's kernel, no `resize_with`
recorded) keeps its identity and updates with its own resize, never a mix of the two."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest

from featx.backbones import create_backbone
from featx.data import DatasetOptions, list_images, open_dataset
from featx.data.preprocess import Preprocess
from featx.errors import ConfigError
from featx.extraction import ExtractConfig, embed, extract
from featx.store import FeatureStore, read_attrs

from tests.test_deploy import smooth_image

CONFIG = ExtractConfig(weights="none", workers=0, dtype="float32")


def make_legacy_store(store: Path) -> None:
    """`store` as featx wrote it before issue 29: its clean transform names no resize."""
    with h5py.File(store, "a") as f:
        transform = json.loads(f.attrs["transform"])
        del transform["clean"]["resize_with"]
        f.attrs["transform"] = json.dumps(transform, sort_keys=True)


def test_an_old_store_updates_with_its_own_resize_and_keeps_its_identity(tmp_path):
    root = tmp_path / "data"
    for i in range(6):
        smooth_image(root / ("a" if i % 2 else "b") / f"{i}.png", i)
    store = extract(open_dataset(root, DatasetOptions(val_frac=0, test_frac=0)), "tiny_cnn",
                    tmp_path / "stores", CONFIG, show_progress=False).store
    make_legacy_store(Path(store))
    before = read_attrs(Path(store))["transform"]
    added = smooth_image(root / "a" / "new.png", 11, size=(47, 39))
    result = extract(open_dataset(root, DatasetOptions(val_frac=0, test_frac=0)), "tiny_cnn",
                     tmp_path / "stores", CONFIG, show_progress=False)
    assert result.status == "updated" and result.images == 1
    assert read_attrs(Path(store))["transform"] == before  # no resize_with: the identity it had
    with FeatureStore(store) as st:
        row = st.paths_of(st.rows()).index("a/new.png")
        got = st.read_clean(st.rows())[row]
    np.testing.assert_allclose(got, features_of(added, before["clean"]), atol=1e-6)
    pillow = features_of(added, {**before["clean"], "resize_with": "pillow"})
    assert not np.allclose(got, pillow, atol=1e-6)  # so the update did not resize with Pillow


def features_of(file: Path, clean: dict) -> np.ndarray:
    """The features CONFIG's tiny_cnn gives `file` under the recorded preprocessing `clean`."""
    backbone = create_backbone("tiny_cnn", "none", 0, clean["input_size"])
    backbone.preprocess = backbone.preprocess.following(clean)
    dataset, _ = list_images([file])
    return embed(dataset, backbone, workers=0)[0][0]


def test_a_new_store_and_an_overwrite_use_pillow(tmp_path):
    root = tmp_path / "data"
    for i in range(4):
        smooth_image(root / ("a" if i % 2 else "b") / f"{i}.png", i)
    ds = open_dataset(root, DatasetOptions(val_frac=0, test_frac=0))
    store = Path(extract(ds, "tiny_cnn", tmp_path / "stores", CONFIG, show_progress=False).store)
    assert read_attrs(store)["transform"]["clean"]["resize_with"] == "pillow"
    make_legacy_store(store)
    extract(ds, "tiny_cnn", tmp_path / "stores", replace(CONFIG, overwrite=True), show_progress=False)
    assert read_attrs(store)["transform"]["clean"]["resize_with"] == "pillow"


def test_a_recorded_resize_featx_does_not_know_is_one_line():
    with pytest.raises(ConfigError, match="resize_with 'opencv'"):
        Preprocess(224, 256).following({"resize_with": "opencv"})
