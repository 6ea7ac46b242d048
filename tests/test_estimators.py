"""featx.probes.estimators: the probes behave as scikit-learn estimators on feature arrays."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks

from featx.probes.estimators import LinearProbe, MLPProbe


def blobs(n=60, dim=8, classes=("cat", "dog", "owl"), seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(len(classes), dim)) * 3
    y = np.repeat(np.array(classes), n)
    x = centers[np.repeat(np.arange(len(classes)), n)] + rng.normal(size=(n * len(classes), dim))
    return x.astype(np.float32), y


def test_fit_returns_self_with_learned_state():
    x, y = blobs()
    probe = LinearProbe(epochs=10)
    assert probe.fit(x, y) is probe
    assert list(probe.classes_) == ["cat", "dog", "owl"] and probe.n_features_in_ == 8
    probs = probe.predict_proba(x)
    assert probs.shape == (len(y), 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert probe.score(x, y) > 0.95
    assert len(probe.search_) == 32 and set(probe.best_params_) == {"lr", "weight_decay"}


def test_clone_and_cross_val_score_work():
    x, y = blobs()
    probe = LinearProbe(lrs=0.1, weight_decays=0.0, epochs=10, random_state=3)
    copy = clone(probe)
    assert copy.get_params() == probe.get_params() and not hasattr(copy, "classes_")
    scores = cross_val_score(probe, x, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.9


def test_same_random_state_same_probe():
    x, y = blobs()
    a = LinearProbe(epochs=5).fit(x, y).predict_proba(x)
    b = LinearProbe(epochs=5).fit(x, y).predict_proba(x)
    np.testing.assert_array_equal(a, b)


def test_mlp_probe_in_a_pipeline():
    x, y = blobs()
    pipe = make_pipeline(FunctionTransformer(np.abs), MLPProbe(hidden=(16,), epochs=20, lrs=1e-2))
    assert pipe.fit(x, y).score(x, y) > 0.8
    mlp = pipe[-1]
    assert "layers.1.weight" in mlp.tensors_ and mlp.best_params_["lr"] == 1e-2


def test_errors_name_the_problem():
    x, y = blobs()
    with pytest.raises(ValueError, match="at least 2 classes"):
        LinearProbe().fit(x, np.zeros(len(y)))
    with pytest.raises(Exception, match="optimizer must be"):
        LinearProbe(optimizer="lbfgs").fit(x, y)
    with pytest.raises(Exception, match="not fitted"):
        LinearProbe().predict(x)
    with pytest.raises(ValueError, match="8 features"):
        LinearProbe(epochs=2).fit(x, y).predict(x[:, :3])


def test_a_sweep_with_nothing_to_hold_out_is_refused():
    x, y = blobs(n=3)  # 15% of 3 rows per class rounds to none
    with pytest.raises(ValueError, match="too few to hold out"):
        LinearProbe(epochs=2).fit(x, y)
    assert LinearProbe(lrs=0.1, weight_decays=0.0, epochs=2).fit(x, y).search_ == []


# scikit-learn's own conformance suite (fitting one sample, pickling, sample order, n_features_in_,
# classifiers learning separable blobs, ...); an MLP needs more than 2 passes over its 150 rows
# (one batch each) to pass check_classifiers_train's 83% bar.
@parametrize_with_checks([LinearProbe(epochs=2), MLPProbe(epochs=10)])
def test_scikit_learn_check_estimator(estimator, check):
    check(estimator)


def test_the_probe_chooses_and_calibrates_as_train_head_does():
    """Of the settings tied on the held-out rows, the lowest cross-entropy at its own temperature;
    predict_proba at that temperature (calibrate="none": as trained, the same predictions)."""
    rng = np.random.default_rng(4)
    x, y = blobs(n=40, dim=32, seed=4)
    x = x / 3 + rng.normal(size=x.shape).astype(np.float32)  # classes that overlap: an honest choice
    options = dict(lrs=(0.01, 0.3, 3.0), weight_decays=(0.0, 1e-3), epochs=5, val_fraction=0.3)
    probe = LinearProbe(**options).fit(x, y)
    raw = LinearProbe(**options, calibrate="none").fit(x, y)
    assert probe.temperature_ != 1.0 and raw.temperature_ == 1.0
    assert probe.best_params_ == raw.best_params_ and any(s["tied"] for s in probe.search_)
    logits = np.log(raw.predict_proba(x))
    z = logits / probe.temperature_
    want = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(probe.predict_proba(x), want / want.sum(1, keepdims=True), atol=1e-5)
    assert (probe.predict(x) == raw.predict(x)).all()
    with pytest.raises(Exception, match="--calibrate must be"):
        LinearProbe(calibrate="platt").fit(x, y)
