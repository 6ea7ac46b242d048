"""The Python API checks its arguments as the CLI does (issue 32): a wrong value is one FeatxError
naming the argument and the problem, never an AttributeError or TypeError from deep inside, and
the obvious inputs of a notebook (a dict for a config, PIL images, numpy arrays of images) work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import featx
from featx.errors import ConfigError, DataError, FeatxError
from tests.conftest import make_class_tree, make_feature_store


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A class tree, its tiny_cnn store (random init) and a linear head on it."""
    root = tmp_path_factory.mktemp("api")
    data = make_class_tree(root / "data", per_class=6)
    store = featx.extract(data, "tiny_cnn", root / "stores", weights="none", workers=0,
                          show_progress=False).store
    head = featx.train_head(store, "linear", featx.HeadConfig(epochs=2), out=root / "heads" / "lin",
                            show_progress=False)
    return data, Path(store), head


def test_open_dataset_takes_options_as_a_dict(class_tree):
    ds = featx.open_dataset(class_tree, options={"val_frac": 0.0, "test_frac": 0.5, "split_seed": 3})
    splits = [s.split for s in ds.samples]
    assert "val" not in splits and splits.count("test") == 6


@pytest.mark.parametrize("options, names", [
    ({"val_fraction": 0.1}, r"options: unknown option\(s\) val_fraction for DatasetOptions \(known: .*val_frac"),
    ("val_frac=0.1", r"options must be a DatasetOptions or a dict of its fields, got str"),
])
def test_open_dataset_refuses_bad_options(class_tree, options, names):
    with pytest.raises(ConfigError, match=names):
        featx.open_dataset(class_tree, options=options)


@pytest.mark.parametrize("backbone", [None, 123, ""])
def test_extract_names_a_backbone_that_is_not_a_name(class_tree, tmp_path, backbone):
    with pytest.raises(ConfigError, match=r"backbone must be a backbone name like .*featx backbones.*got "):
        featx.extract(class_tree, backbone, tmp_path / "stores", show_progress=False)
    assert not (tmp_path / "stores").exists()


@pytest.mark.parametrize("views", [2.5, True, "2"])
def test_extract_refuses_views_of_the_wrong_type_before_any_store(class_tree, tmp_path, views):
    with pytest.raises(ConfigError, match=r"views must be an integer, got"):
        featx.extract(class_tree, "tiny_cnn", tmp_path / "stores", views=views, show_progress=False)
    assert not list(tmp_path.rglob("*.h5"))


def test_extract_takes_config_as_a_dict(class_tree, tmp_path):
    run = featx.extract(class_tree, "tiny_cnn", tmp_path / "stores",
                        config={"weights": "none", "workers": 0, "dtype": "float32"}, show_progress=False)
    with featx.FeatureStore(run.store) as store:
        assert store.f["features/clean"].dtype == np.float32


def test_extract_refuses_unknown_config_keys(class_tree, tmp_path):
    with pytest.raises(ConfigError, match=r"config: unknown option\(s\) view for ExtractConfig"):
        featx.extract(class_tree, "tiny_cnn", tmp_path / "stores", config={"view": 2}, show_progress=False)
    with pytest.raises(ConfigError, match=r"config must be an ExtractConfig or a dict of its fields, got list"):
        featx.extract(class_tree, "tiny_cnn", tmp_path / "stores", config=[("views", 2)], show_progress=False)


def test_train_head_takes_config_as_a_dict(tmp_path):
    store = make_feature_store(tmp_path / "s.h5", n_per_class=10)
    head = featx.train_head(store, "mlp", config={"epochs": 2, "hidden": 8}, out=tmp_path / "h",
                            show_progress=False)
    assert head.kind == "mlp" and head.tensors["layers.0.weight"].shape[1] == 8
    with pytest.raises(ConfigError, match=r"config: unknown option\(s\) epoch for HeadConfig"):
        featx.train_head(store, "linear", config={"epoch": 2}, out=tmp_path / "h2", show_progress=False)
    assert not list(tmp_path.glob("h2*"))


def test_predict_proba_takes_pil_images_and_arrays_of_images(world, tmp_path):
    data, _, head = world
    files = sorted((data / "ants").glob("*.png"))[:3]
    from_files = head.predict_proba([str(f) for f in files], workers=0)
    images = [Image.open(f).convert("RGB") for f in files]
    assert np.allclose(head.predict_proba(images[0], workers=0), from_files[:1], atol=1e-5)
    assert np.allclose(head.predict_proba(images, workers=0), from_files, atol=1e-5)
    stack = np.stack([np.asarray(im) for im in images])  # [n, H, W, 3] uint8
    assert np.allclose(head.predict_proba(stack, workers=0), from_files, atol=1e-5)
    assert np.allclose(head.predict_proba(list(stack), workers=0), from_files, atol=1e-5)
    assert head.predict(images, workers=0) == head.predict([str(f) for f in files], workers=0)
    one = featx.predict(head, images[1], workers=0)
    assert one.paths == ["image 0"] and np.allclose(one.scores, from_files[1:2], atol=1e-5)


def test_open_dataset_names_a_source_that_is_no_path():
    with pytest.raises(ConfigError, match=r"DATA must be a folder, a manifest file or a packaged dataset name, got NoneType"):
        featx.open_dataset(None)


@pytest.mark.parametrize("bad, names", [
    (None, r"inputs must be .*got None"),
    (3.5, r"inputs must be .*got float"),
    ([], r"inputs: nothing to predict"),
    (np.zeros((2, 5, 5, 7), np.uint8), r"images of shape \(2, 5, 5, 7\).*1, 3 or 4 channels"),
])
def test_predict_proba_names_inputs_it_cannot_use(world, bad, names):
    with pytest.raises(FeatxError, match=names):
        world[2].predict_proba(bad)


def test_read_clean_names_the_row_and_the_store_size(world):
    with featx.FeatureStore(world[1]) as store:
        n = len(store.paths)
        with pytest.raises(FeatxError, match=rf"rows? 999 .*{n} rows \(0 to {n - 1}\)"):
            store.read_clean([999])
        with pytest.raises(FeatxError, match=rf"rows? -1 .*{n} rows"):
            store.read_clean(np.array([0, -1]))
        assert store.read_clean([n - 1, 0]).shape == (2, store.read_clean([0]).shape[1])


@pytest.mark.parametrize("key", ["", ".", "..", "a/../../b"])
def test_parquet_id_that_is_no_file_name_is_one_line(tmp_path, key):
    pa = pytest.importorskip("pyarrow")
    import io
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, "PNG")
    table = pa.table({"id": [key, "ok"], "image": [{"bytes": buf.getvalue(), "path": None}] * 2,
                      "label": ["a", "b"]})
    pq.write_table(table, tmp_path / "t.parquet")
    with pytest.raises(DataError, match=r"t\.parquet: sample key '.*' cannot name a file"):
        featx.open_dataset(tmp_path / "t.parquet")


def _png(color) -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, "PNG")
    return buf.getvalue()


def test_a_parquet_row_without_an_image_is_named_and_keeps_its_class(tmp_path):
    """A null image cell is a failed sample with its reason, not a row dropped in silence (its
    class vanished from the list with it); first in the table, it must not make the unpacked
    manifest's header a data row."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    images = [None, {"bytes": _png((1, 2, 3)), "path": None}, {"bytes": _png((9, 9, 9)), "path": None},
              {"bytes": None, "path": None}]
    pq.write_table(pa.table({"image": images, "label": ["c", "a", "b", "a"]}), tmp_path / "t.parquet")
    ds = featx.open_dataset(tmp_path / "t.parquet", options={"val_frac": 0.0, "test_frac": 0.0})
    assert ds.classes == ["a", "b", "c"]  # c's only row has no image: still a class of the data
    assert len(ds.samples) == 4 and "path" not in {Path(s.path).name for s in ds.samples}
    from featx.data import require_decodable  # noqa: F401 (the failed rows are decode failures)
    empty = [s for s in ds.samples if (Path(ds.root) / s.path).stat().st_size == 0]
    assert len(empty) == 2
