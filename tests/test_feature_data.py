"""featx.probes.feature_data: training data from a store, in memory or streamed with flat memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from featx.errors import StoreError
from featx.probes.feature_data import FeatureData
from featx.probes.sweep import HeadConfig, train_heads
from featx.store import FeatureStore, StoreWriter
from tests.conftest import make_feature_store


def test_epochs_mix_clean_and_augmented_views(blob_store):
    with FeatureStore(blob_store) as st:
        data = FeatureData(st)
        clean, _ = st.features("train")
        batches = list(data.epoch(0, batch_size=1000, seed=0))
        (x, y), = batches
        assert x.shape == clean.shape and len(y) == data.n_train
        is_clean = (x[:, None, :] == clean[None]).all(-1).any(1)
        assert 0.15 < is_clean.mean() < 0.6  # about 1 in 3 with 2 views
        again = list(data.epoch(0, batch_size=1000, seed=0))[0][0]
        np.testing.assert_array_equal(x, again)
        other = list(data.epoch(1, batch_size=1000, seed=0))[0][0]
        assert not np.array_equal(x, other)
        only_clean = FeatureData(st, use_views=False)
        (xc, _), = list(only_clean.epoch(0, 1000, 0))
        assert (xc[:, None, :] == clean[None]).all(-1).any(1).all()


def test_streaming_keeps_memory_flat_and_learns(tmp_path):
    # Big enough that a streamed read (up to featx.store.reader.SPARSE x 256 rows) is a small part.
    path = make_feature_store(tmp_path / "big.h5", n_per_class=2400, dim=256, views=2)
    with FeatureStore(path) as st:
        peaks = {}
        for mode, budget in (("memory", None), ("streamed", 1.0)):
            tracemalloc.start()
            data = FeatureData(st, memory_mb=budget)
            result = train_heads(data, data.fit_normalizer("standard"),
                                 HeadConfig(epochs=2, batch_size=64, lrs=(0.1,), weight_decays=(0.0,)))
            peaks[mode] = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
            assert data.streamed == (mode == "streamed")
            assert result.val_top1[0] > 0.9
    needed = 3 * 3600 * 256 * 4 / 2**20  # clean + 2 views of the training rows, float32
    assert peaks["memory"] > needed
    assert peaks["streamed"] < needed / 3, peaks


def test_incomplete_store_is_refused(tmp_path):
    path = make_feature_store(tmp_path / "s.h5")
    with FeatureStore(path) as st:
        pass
    import h5py

    with h5py.File(path, "r+") as f:
        f.attrs.modify("complete", np.uint8(0))
    with FeatureStore(path) as st, pytest.raises(StoreError, match="incomplete.*featx extract"):
        FeatureData(st)


def test_a_unit_dead_in_training_cannot_decide_predictions_when_it_wakes_up(tmp_path):
    """Constant on the training set (std 0): scaled like a typical feature, not by a 1e-6 floor
    that turns its first non-zero value on a new image into a logit of ~1e6."""
    import h5py

    from featx.probes.train import train_head

    path = make_feature_store(tmp_path / "s.h5")
    with h5py.File(path, "r+") as f:
        splits = np.array(f["samples/split"].asstr()[:])
        clean = f["features/clean"][:]
        clean[:, 0] = np.where(splits == "test", 5.0, 0.0)  # dead in train and val, awake in test
        f["features/clean"][:] = clean
        aug = f["features/aug"][:]
        aug[..., 0] = 0.0
        f["features/aug"][:] = aug
    with FeatureStore(path) as st:
        std = FeatureData(st).fit_normalizer("standard").std
    others = np.median(std[1:])
    assert std[0] == pytest.approx(others, rel=0.3)
    result = train_head(path, "linear", HeadConfig(epochs=10), out=tmp_path / "h", show_progress=False)
    assert result.val.top1 > 0.9 and result.test.top1 > 0.9
