"""Issue 28, the rest: train-head's val path (large stores, streamed features, --select val)
chooses among tied settings as cross-validation does, and every path that gives a head's
probabilities gives them at its temperature (re-splits included)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

import featx.probes.selection as selection
from featx.evaluation.calibration import fit_temperature, softmax_at, weighted_nll_ece
from featx.evaluation.metrics import evaluate
from featx.heads.predict import predict
from featx.heads.scoring import Normalizer, linear_scores
from featx.probes.selection import PoolData, choose, choose_on_val, fit_arrays
from featx.probes.sweep import HeadConfig, train_heads
from tests.conftest import make_feature_store

# Tiny heads: torch's thread pool only waits on a busy box (conftest's one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")

# Six settings on a small, hard task (classes overlap in 32 dimensions): several tie on val.
GRID = HeadConfig(epochs=5, batch_size=32, lrs=(0.01, 0.3, 3.0), weight_decays=(0.0, 1e-3), select="val")


def _hard(rng, n: int, dim: int = 32, classes: int = 3, separation: float = 0.5):
    centers = rng.normal(size=(classes, dim)) * separation
    y = np.arange(n) % classes
    return (centers[y] + rng.normal(size=(n, dim))).astype(np.float32), y.astype(np.int64)


def _swept():
    """A sweep trained on 60 images, and its normalised val split of 150."""
    rng = np.random.default_rng(0)
    x, y = _hard(rng, 60)
    x_val, y_val = _hard(np.random.default_rng(0), 150)  # same centres (same first draw), new noise
    x_val = x_val + rng.normal(size=x_val.shape).astype(np.float32) * 0.1
    normalizer = Normalizer.fit("standard", x)
    data = PoolData(normalizer(x), y, 3, val=(normalizer(x_val), y_val))
    return train_heads(data, Normalizer("none"), GRID), data


def test_the_val_path_applies_the_rule_of_cross_validation_in_bounded_memory(monkeypatch):
    sweep, data = _swept()
    x_val, y_val = data.val
    import torch

    with torch.no_grad():
        logits = sweep.heads(torch.from_numpy(x_val)).numpy()
    want = choose(logits, y_val, sweep.usable)  # the rule, given every head's val logits at once
    monkeypatch.setattr(selection, "VAL_LOGITS_MB", 1e-9)  # one tied head's logits at a time
    got = choose_on_val(sweep, lambda: data.split_blocks("val"))
    assert got.tied.sum() >= 2  # a real choice among tied settings
    assert (got.best, got.leader) == (want.best, want.leader) and got.leader == sweep.best
    np.testing.assert_array_equal(got.tied, want.tied)
    np.testing.assert_allclose(got.calibrated_loss, want.calibrated_loss, rtol=1e-6)
    np.testing.assert_allclose(got.oof_logits, logits[got.best], rtol=1e-6)
    assert got.folds == 0 and (got.labels == y_val).all()


@pytest.mark.parametrize("memory_mb", [None, 0.001], ids=["in-memory", "streamed"])
def test_train_head_on_val_says_what_it_chose_and_why(tmp_path, memory_mb):
    store = make_feature_store(tmp_path / "s.h5", n_per_class=40, dim=32, separation=0.4, views=0,
                               splits=("train", "val", "val", "test"))
    head = train_head_quiet(store, tmp_path / "h", memory_mb=memory_mb)
    assert head.meta.streamed == (memory_mb is not None)
    meta = json.loads(head.path.with_suffix(".json").read_text())
    sel, search = meta["selection"], meta["search"]
    assert sel["method"] == "val" and sel["rows"] == head.val.n == 60
    assert sel["why"].startswith("the val split (60 images): ")
    tied = [c for c in search if c.get("tied")]
    chosen = min(tied, key=lambda c: c["val_loss_calibrated"])
    assert (head.params["lr"], head.params["weight_decay"]) == (chosen["lr"], chosen["weight_decay"])
    assert sel["tied"] == len(tied) and any(c["val_top1"] == max(s["val_top1"] for s in search) for c in tied)
    if len(tied) > 1:
        assert "had the lowest val cross-entropy at its own temperature" in sel["why"]
    # The chosen setting's own val temperature is the head's (fitted on val, never test).
    assert head.meta.temperature == pytest.approx(chosen["temperature"])
    assert "val split" in head.meta["calibration"]["fitted_on"]


def train_head_quiet(store, out, memory_mb=None):
    from featx.probes.train import train_head

    return train_head(store, "linear", GRID, out=out, show_progress=False, memory_mb=memory_mb)


def test_fit_arrays_gives_the_temperature_train_head_would_keep():
    rng = np.random.default_rng(1)
    x, y = _hard(rng, 60)
    x_val, y_val = _hard(np.random.default_rng(1), 30)
    tensors, normalizer, t = fit_arrays(x, y, x_val, y_val, 3, GRID)
    logits = linear_scores(tensors, normalizer(x_val), softmax_output=False)
    assert t != 1.0 and t == pytest.approx(fit_temperature(logits, y_val), rel=1e-6)
    assert fit_arrays(x, y, x_val, y_val, 3, GRID, calibrate="none")[2] == 1.0
    _, _, t_cv = fit_arrays(x, y, x_val, y_val, 3, replace(GRID, select="cv", folds=3))
    assert t_cv != 1.0  # the out-of-fold temperature of the cross-validated choice


def test_resplits_score_the_calibrated_heads(tmp_path, monkeypatch):
    from featx.probes.resplits import resplit_heads

    store = make_feature_store(tmp_path / "s.h5", n_per_class=40, dim=32, separation=0.35, views=0,
                               splits=("train", "train", "val", "test"))
    monkeypatch.setattr("featx.probes.resplits.HeadConfig", lambda head: replace(GRID, head=head))
    calibrated = resplit_heads(store, ("linear",), 1, show_progress=False).scores["linear"][0]
    as_trained = selection.fit_arrays
    monkeypatch.setattr("featx.probes.resplits.fit_arrays",
                        lambda *a, **k: (*as_trained(*a, **k)[:2], 1.0))  # the temperature dropped
    raw = resplit_heads(store, ("linear",), 1, show_progress=False).scores["linear"][0]
    assert calibrated["top1"] == raw["top1"]  # the same head
    assert calibrated["nll"] < raw["nll"]


def test_a_logreg_heads_temperature_is_fitted_on_val_and_only_softmax_heads_get_one():
    from featx.probes.calibrated import array_temperature

    rng = np.random.default_rng(2)
    x, y = _hard(rng, 90)
    tensors = {"layers.0.weight": rng.normal(size=(32, 3)).astype(np.float32) * 3,
               "layers.0.bias": np.zeros(3, np.float32)}
    logits = linear_scores(tensors, x, softmax_output=False)
    assert array_temperature("temperature", "logreg", tensors, x, y) == pytest.approx(fit_temperature(logits, y))
    assert array_temperature("none", "logreg", tensors, x, y) == 1.0
    assert array_temperature("temperature", "svm", tensors, x, y) == 1.0


def test_predict_on_a_store_gives_the_heads_calibrated_probabilities(tmp_path):
    store = make_feature_store(tmp_path / "s.h5", n_per_class=40, dim=32, separation=0.4, views=0)
    head = train_head_quiet(store, tmp_path / "h")
    assert head.meta.temperature != 1.0
    from featx.store import FeatureStore

    with FeatureStore(store) as st:
        rows = st.rows()
        logits = linear_scores(head.tensors, head.normalizer()(st.read_clean(rows)), softmax_output=False)
    got = predict(head, store).scores
    np.testing.assert_allclose(got, softmax_at(logits, head.meta.temperature), atol=1e-5)
    assert not np.allclose(got, softmax_at(logits), atol=1e-3)


def test_weighted_calibration_reads_the_test_split_as_another_class_mix():
    rng = np.random.default_rng(3)
    probs = softmax_at(rng.normal(size=(200, 3)) * 2)
    y = rng.integers(0, 3, 200)
    m = evaluate(y, probs, ["a", "b", "c"], keep_samples=False, resamples=0)
    assert weighted_nll_ece(probs, y) == pytest.approx((m.nll, m.ece))
    w = rng.integers(1, 4, 200)  # an integer weight counts an image that many times
    rows = np.repeat(np.arange(200), w)
    assert weighted_nll_ece(probs, y, w) == pytest.approx(weighted_nll_ece(probs[rows], y[rows]))
