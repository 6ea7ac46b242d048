"""featx.probes.selection + train_head's k-fold path: settings chosen on train+val, never on test."""

from __future__ import annotations

import json

import numpy as np
import pytest

from featx.errors import ConfigError
from featx.probes.sweep import HeadConfig
from featx.evaluation.metrics import evaluate, selection_scores
from featx.probes.selection import CV_MAX_ROWS, PoolData, choose, stratified_folds, tied_with, use_cv
from featx.store import FeatureStore
from featx.probes.cv import why_chosen
from featx.probes.train import train_head
from tests.conftest import make_feature_store

CV = HeadConfig(epochs=6, batch_size=32, lrs=(1e-3, 0.1, 1.0), weight_decays=(0.0, 1e-3), select="cv", folds=3)


def test_cv_selects_on_train_val_and_refits_on_all_of_it(tmp_path):
    store = make_feature_store(tmp_path / "s.h5", separation=1.0)
    head = train_head(store, "linear", CV, out=tmp_path / "h", show_progress=False)
    meta = json.loads(head.path.with_suffix(".json").read_text())
    with FeatureStore(store) as st:
        n_pool = int(np.isin(st.splits, ["train", "val"]).sum())
    selection = meta["selection"]
    assert selection["method"] == "cv" and selection["folds"] == 3 and selection["rows"] == n_pool
    assert meta["train_samples"] == n_pool and sum(meta["train_counts"]) == n_pool
    assert head.val.n == n_pool  # out-of-fold predictions of every train+val image
    assert "3-fold cross-validation" in selection["why"]
    # The chosen settings are tied with the best out-of-fold top-1 of the grid and have the
    # lowest calibrated out-of-fold cross-entropy of those, as the search lists them.
    best = max(c["val_top1"] for c in meta["search"])
    tied = [c for c in meta["search"] if c["tied"]]
    assert any(c["val_top1"] == best for c in tied)
    chosen = min(tied, key=lambda c: c["val_loss_calibrated"])
    assert (head.params["lr"], head.params["weight_decay"]) == (chosen["lr"], chosen["weight_decay"])
    assert selection["score"] == pytest.approx(head.val.top1)


def test_test_labels_never_influence_the_choice(tmp_path):
    """Two stores that differ only in their test labels give the same head, bit for bit."""
    a = make_feature_store(tmp_path / "a.h5", separation=1.0)
    b = make_feature_store(tmp_path / "b.h5", separation=1.0)
    from featx.store import open_h5

    with open_h5(b, "r+") as f:
        test = f["samples/split"].asstr()[:] == "test"
        labels = f["samples/label"][:]
        labels[test] = (labels[test] + 1) % 3
        f["samples/label"][:] = labels
    ha = train_head(a, "linear", CV, out=tmp_path / "ha", show_progress=False)
    hb = train_head(b, "linear", CV, out=tmp_path / "hb", show_progress=False)
    assert ha.params == hb.params
    for name, tensor in ha.tensors.items():
        np.testing.assert_array_equal(tensor, hb.tensors[name])
    assert ha.test.top1 != hb.test.top1  # the test labels did differ


def test_same_seed_same_head_under_cv(tmp_path):
    store = make_feature_store(tmp_path / "s.h5", separation=1.0)
    h1 = train_head(store, "linear", CV, out=tmp_path / "h1", show_progress=False)
    h2 = train_head(store, "linear", CV, out=tmp_path / "h2", show_progress=False)
    for name, tensor in h1.tensors.items():
        np.testing.assert_array_equal(tensor, h2.tensors[name])


@pytest.mark.parametrize("config,rows,streamed,expected", [
    (HeadConfig(), 2_624, False, True),  # auto on small data: cross-validate
    (HeadConfig(), CV_MAX_ROWS + 1, False, False),  # large: one val split is precise enough
    (HeadConfig(select="cv"), CV_MAX_ROWS + 1, False, True),  # asked for
    (HeadConfig(select="val"), 100, False, False),
    (HeadConfig(), 100, True, False),  # streamed features are not held in memory
    (HeadConfig(patience=3), 100, False, False),  # early stopping needs a val split
    (HeadConfig(head="logreg"), 100, False, False),  # baselines search on val
    (HeadConfig(lrs=(0.1,), weight_decays=(0.0,)), 100, False, False),  # one candidate: nothing to choose
])
def test_when_cross_validation_applies(config, rows, streamed, expected):
    assert use_cv(config, rows, streamed) is expected


def test_selection_scores_agree_with_evaluate():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 60)
    y[y == 3] = 2  # a class absent from y_true is left out, as evaluate does
    pred = rng.integers(0, 4, (3, 60))
    for metric in ("top1", "balanced_accuracy", "macro_f1"):
        got = selection_scores(pred, y, 4, metric)
        want = [getattr(evaluate(y, np.eye(4)[p], list("abcd")), metric) for p in pred]
        np.testing.assert_allclose(got, want)


def test_the_selection_metric_is_the_users_choice(tmp_path):
    store = make_feature_store(tmp_path / "s.h5", separation=1.0)
    config = HeadConfig(epochs=4, batch_size=32, lrs=(1e-3, 0.1), weight_decays=(0.0,), select="cv",
                        folds=3, metric="macro_f1")
    head = train_head(store, "linear", config, out=tmp_path / "h", show_progress=False)
    meta = json.loads(head.path.with_suffix(".json").read_text())
    assert meta["selection"]["metric"] == "macro_f1" and "macro_f1" in meta["selection"]["why"]
    assert meta["selection"]["score"] == pytest.approx(head.val.macro_f1)
    with pytest.raises(ConfigError, match="metric"):
        HeadConfig(metric="accuracy")


def test_folds_are_stratified_and_seeded():
    labels = np.repeat([0, 1, 2], [30, 12, 6])
    fold = stratified_folds(labels, 3, seed=0)
    for c in range(3):
        counts = np.bincount(fold[labels == c], minlength=3)
        assert counts.max() - counts.min() <= 1
    np.testing.assert_array_equal(fold, stratified_folds(labels, 3, seed=0))
    assert not np.array_equal(fold, stratified_folds(labels, 3, seed=1))


def test_pool_rows_without_views_always_give_their_clean_features():
    clean = np.zeros((6, 2), np.float32)
    aug = np.ones((2, 3, 2), np.float32)  # views of the first three rows (the train split)
    index = np.array([0, 1, 2, -1, -1, -1])
    pool = PoolData(clean, np.arange(6) % 2, 2, aug, index)
    augmented = 0
    for epoch in range(20):
        (x, _), = list(pool.epoch(epoch, 6, seed=0))
        assert (x.sum(1) > 0).sum() <= 3  # only the three rows with views can be augmented
        augmented += int((x.sum(1) > 0).sum())
    assert augmented > 0  # and they are, in some epochs
    for x, _ in pool.subset(np.array([3, 4, 5])).epoch(0, 3, seed=0):
        assert not x.any()


@pytest.mark.parametrize("config,streamed,reason", [
    (HeadConfig(select="cv", head="logreg"), False, "baselines search on the val split"),
    (HeadConfig(select="cv"), True, "stream"),
    (HeadConfig(select="cv", patience=2), False, "early stopping"),
    (HeadConfig(select="cv", lrs=(0.1,), weight_decays=(0.0,)), False, "nothing to choose"),
])
def test_cv_asked_for_where_it_cannot_run_is_refused(config, streamed, reason):
    with pytest.raises(ConfigError, match=f"--select cv: .*{reason}"):
        use_cv(config, 100, streamed)


def test_rare_classes_spread_over_the_folds():
    labels = np.repeat(np.arange(6), 2)  # six classes of two rows each, 5 folds
    fold = stratified_folds(labels, 5, seed=0)
    assert len(np.unique(fold)) >= 4  # not every class starting at fold 0


def _two_class_logits(y: np.ndarray, correct: np.ndarray, margin: np.ndarray) -> np.ndarray:
    """[n, 2] logits predicting y where `correct`, the other class elsewhere, by `margin`."""
    pred = np.where(correct, y, 1 - y)
    logits = np.zeros((len(y), 2), np.float32)
    logits[np.arange(len(y)), pred] = margin
    return logits


def test_among_heads_tied_on_top1_the_one_whose_confidence_can_be_trusted_is_chosen():
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 2, n)
    right = rng.random(n) < 0.8
    fewer = right.copy()
    fewer[np.flatnonzero(right)[:6]] = False  # six others wrong, four others right: within the noise
    fewer[np.flatnonzero(~right)[:4]] = True
    heads = np.stack([
        _two_class_logits(y, right, rng.uniform(5, 10, n)),  # best top-1, equally sure when wrong
        _two_class_logits(y, fewer, np.where(fewer, 3.0, 0.3)),  # sure when right, unsure when wrong
        _two_class_logits(y, rng.random(n) < 0.5, np.full(n, 0.01)),  # a coin: not tied
    ])
    cv = choose(heads, y, np.ones(3, bool), folds=5)
    assert cv.leader == 0  # what the best top-1 alone picked
    assert cv.tied.tolist() == [True, True, False]
    assert cv.best == 1 and cv.calibrated_loss[1] < cv.calibrated_loss[0]
    np.testing.assert_array_equal(cv.oof_logits, heads[1])
    config = HeadConfig(lrs=(0.1, 1.0, 3.0), weight_decays=(0.0,))
    assert why_chosen(cv, config, n) == (
        f"5-fold cross-validation on train+val (400 images): 2 of 3 settings had an out-of-fold top1 tied "
        f"with the best, lr 0.1, weight decay 0 ({cv.scores[0]:.1%}; paired bootstrap, 95%); of those, "
        f"lr 1, weight decay 0 ({cv.scores[1]:.1%}) had the lowest out-of-fold cross-entropy at its own "
        f"temperature ({cv.calibrated_loss[1]:.3f} vs {cv.calibrated_loss[0]:.3f} for the best top1): the "
        "least overconfident; refitted on all of them")


def test_ties_are_paired_and_a_diverged_head_is_never_tied():
    y = np.arange(200) % 2
    pred = np.stack([y, y, 1 - y])
    pred[1, :3] = 1 - y[:3]  # three images apart from the best
    tied = tied_with(pred, y, 0, np.array([True, False, True]), "top1", 2)
    assert tied.tolist() == [True, False, False]
    assert tied_with(pred, y, 0, np.ones(3, bool), "top1", 2).tolist() == [True, True, False]
