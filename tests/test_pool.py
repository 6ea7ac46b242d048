"""extract --pool: pooled intermediate maps stored beside the final features, and heads that
take them (train-head --features) and compute them again for new images (predict)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featx.backbones import create_backbone
from featx.backbones.cuts import pool_maps, trunk_for
from featx.errors import ConfigError, StoreError
from featx.extraction import ExtractConfig, extract
from featx.probes.sweep import HeadConfig
from featx.store import FeatureStore
from featx.probes.train import train_head
from tests.conftest import make_class_tree

@pytest.fixture
def tree(tmp_path):
    return make_class_tree(tmp_path / "data", per_class=10)


def _extract(tree, out, **options):
    config = ExtractConfig(weights="none", **options)
    return extract(tree, "tiny_features", out, config, show_progress=False).store


def test_default_pool_appends_the_pooled_maps_of_the_default_block(tree, tmp_path):
    block = trunk_for(create_backbone("tiny_features", None, 0).model).default_pool
    # --cut stores the maps entering the block through the trunk's own bottom: pooled, they are
    # what the forward hook of --pool caught.
    store = _extract(tree, tmp_path / "s", engine="torch", dtype="float32", cut=block)
    with FeatureStore(store) as st:
        assert st.pool == block and st.final_dim == 16
        feats, maps = st.read_clean(), np.asarray(st.cut_maps(block)[:], np.float32)
    want = pool_maps(torch.from_numpy(maps)).numpy()
    assert feats.shape == (len(maps), 16 + want.shape[1])
    np.testing.assert_allclose(feats[:, 16:], want, rtol=1e-2, atol=1e-3)  # maps are float16


def test_pool_none_stores_the_final_features_only_and_they_match(tree, tmp_path):
    pooled = _extract(tree, tmp_path / "a", engine="torch", dtype="float32")
    plain = _extract(tree, tmp_path / "b", engine="torch", dtype="float32", pool="none")
    assert plain != pooled and "pool-none" in plain
    with FeatureStore(pooled) as a, FeatureStore(plain) as b:
        assert b.pool is None and b.feature_dim == b.final_dim == 16
        np.testing.assert_allclose(a.read_clean()[:, :16], b.read_clean(), rtol=1e-5, atol=1e-6)


def test_onnx_and_torch_agree_on_pooled_features(tree, tmp_path):
    a = _extract(tree, tmp_path / "a", engine="torch", dtype="float32")
    b = _extract(tree, tmp_path / "b", engine="onnxruntime", dtype="float32")
    with FeatureStore(a) as sa, FeatureStore(b) as sb:
        assert sb.attrs["engine"] == "onnxruntime" and sa.feature_dim == sb.feature_dim
        np.testing.assert_allclose(sa.read_clean(), sb.read_clean(), rtol=1e-3, atol=1e-4)


def test_a_store_made_without_pool_is_refused_with_the_reason(tree, tmp_path):
    plain = _extract(tree, tmp_path / "s", pool="none")
    with pytest.raises(StoreError, match="pool"):
        extract(tree, "tiny_features", tmp_path / "s", ExtractConfig(weights="none"), show_progress=False,
                store_path=plain)


def test_pool_needs_known_cut_points(tree, tmp_path):
    # tiny_cnn has no cut points: auto means no pooling, a named block is an error.
    store = extract(tree, "tiny_cnn", tmp_path / "s", ExtractConfig(weights="none"), show_progress=False).store
    with FeatureStore(store) as st:
        assert st.pool is None and st.feature_dim == 16
    with pytest.raises(ConfigError, match="--pool block3: tiny_cnn has no known cut points"):
        extract(tree, "tiny_cnn", tmp_path / "t", ExtractConfig(weights="none", pool="block3"),
                show_progress=False)


@pytest.mark.parametrize("features", ["all", "final"])
def test_predict_on_images_computes_the_columns_the_head_took(tree, tmp_path, features):
    store = _extract(tree, tmp_path / "s", engine="torch", dtype="float32")
    config = HeadConfig(epochs=3, batch_size=16, lrs=(0.1,), weight_decays=(0.0,), select="val",
                        features=features)
    head = train_head(store, "linear", config, out=tmp_path / "h", show_progress=False)
    with FeatureStore(store) as st:
        assert head.feature_dim == (st.feature_dim if features == "all" else st.final_dim)
        assert head.meta["pool"] == (st.pool if features == "all" else None)
        feats = st.read_clean()[:, :head.feature_dim]
        paths = [str(tree / p) for p in st.paths]
    from_store = head.predict_proba(feats)
    from_images = head.predict_proba(paths, engine="torch")
    np.testing.assert_allclose(from_images, from_store, rtol=1e-3, atol=1e-4)


def test_auto_pools_at_the_cut_when_the_cut_is_higher(tree, tmp_path):
    """finetune --from-block recomputes pooled columns only above its cut: with a cut above the
    default block, auto pools the maps entering the cut itself."""
    trunk = trunk_for(create_backbone("tiny_features", None, 0).model)
    high = trunk.cuts[-1]
    assert trunk.cuts.index(high) > trunk.cuts.index(trunk.default_pool)
    store = _extract(tree, tmp_path / "s", engine="torch", cut=high)
    with FeatureStore(store) as st:
        assert st.pool == high
    low = trunk.cuts[0]
    store = _extract(tree, tmp_path / "t", engine="torch", cut=low)
    with FeatureStore(store) as st:
        assert st.pool == trunk.default_pool
