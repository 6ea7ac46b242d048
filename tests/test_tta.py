"""extract --tta: features averaged over an image and its symmetries, in stores and in predict."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from featx.errors import ConfigError, StoreError
from featx.extraction import ExtractConfig, extract
from featx.probes.sweep import HeadConfig
from featx.store import FeatureStore
from featx.probes.train import train_head
from tests.conftest import make_class_tree


@pytest.fixture
def tree(tmp_path):
    return make_class_tree(tmp_path / "data", per_class=8)


def _mirrored_copy(tree, root):
    for path in tree.rglob("*.png"):
        target = root / path.relative_to(tree)
        target.parent.mkdir(parents=True, exist_ok=True)
        ImageOps.mirror(Image.open(path)).save(target)
    return root


def _features(tree, out, **options):
    store = extract(tree, "tiny_features", out, ExtractConfig(weights="none", dtype="float32", **options),
                    show_progress=False).store
    with FeatureStore(store) as st:
        return store, st.read_clean(), list(st.paths)


def test_flip_tta_stores_the_mean_of_the_image_and_its_mirror(tree, tmp_path):
    # Square 32 px images, a 28 px crop of a 32 px resize: the crop is centred to the pixel, so
    # mirroring the file mirrors the network's input exactly.
    for image in tree.rglob("*.png"):
        Image.open(image).resize((32, 32)).save(image)
    store, tta, paths = _features(tree, tmp_path / "a", tta="flip", engine="torch", input_size=28)
    assert store.endswith("_tta-flip.h5")
    _, plain, plain_paths = _features(tree, tmp_path / "b", engine="torch", input_size=28)
    _, mirrored, mirrored_paths = _features(_mirrored_copy(tree, tmp_path / "m"), tmp_path / "c",
                                            engine="torch", input_size=28)
    assert paths == plain_paths == mirrored_paths
    np.testing.assert_allclose(tta, (plain + mirrored) / 2, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("recipe", ["hv-flip", "dihedral"])
def test_onnx_runtime_agrees_with_torch_on_tta(tree, tmp_path, recipe):
    _, a, _ = _features(tree, tmp_path / "a", tta=recipe, engine="torch")
    store, b, _ = _features(tree, tmp_path / "b", tta=recipe, engine="onnxruntime")
    with FeatureStore(store) as st:
        assert st.attrs["engine"] == "onnxruntime" and st.attrs["tta"] == recipe
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_tta_is_part_of_the_store_identity(tree, tmp_path):
    plain, _, _ = _features(tree, tmp_path / "s")
    with pytest.raises(StoreError, match="tta"):
        extract(tree, "tiny_features", tmp_path / "s", ExtractConfig(weights="none", dtype="float32", tta="flip"),
                store_path=plain, show_progress=False)
    with pytest.raises(ConfigError, match="tta"):
        ExtractConfig(tta="rotate")


def test_predict_averages_new_images_as_the_store_did(tree, tmp_path):
    store, feats, paths = _features(tree, tmp_path / "s", tta="flip", engine="torch")
    head = train_head(store, "linear", HeadConfig(epochs=3, batch_size=16, lrs=(0.1,), weight_decays=(0.0,)),
                      out=tmp_path / "h", show_progress=False)
    assert head.meta["tta"] == "flip"
    np.testing.assert_allclose(head.predict_proba([str(tree / p) for p in paths], engine="torch"),
                               head.predict_proba(feats), rtol=1e-3, atol=1e-4)
