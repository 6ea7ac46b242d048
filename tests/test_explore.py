"""Issue 30, the data loop: strategies on arrays, the labelling curve, and the store helper that
tests/test_select.py and tests/test_map.py build their stores with."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from featx.errors import ConfigError
from featx.explore.strategies import STRATEGIES, choose


def make_store(path: Path, x: np.ndarray, labels, splits, classes=("a", "b", "c"), root: Path | None = None,
               names: list[str] | None = None) -> Path:
    """A complete store of the features `x` [n, D] with these labels (-1: unlabelled) and splits,
    written without a backbone (rows' paths img/00000.png, ... or `names`, under `root`)."""
    from featx.data import Dataset, Sample
    from featx.store import StoreSpec, StoreWriter, prepare_store

    names = names or [f"img/{i:05d}.png" for i in range(len(x))]
    samples = [Sample(p, int(y), s, 100, i) for i, (p, y, s) in enumerate(zip(names, labels, splits))]
    dataset = Dataset(root or path.parent / "no-images-here", "blobs", "manifest", samples, list(classes),
                      list(classes))
    spec = StoreSpec(provenance={
        "backbone": "resnet18", "weights": {"source": "random-init(seed=0)"},
        "weights_sha256": "random-init(seed=0)", "input_size": 32,
        "transform": {"clean": {"input_size": 32, "resize_size": 37, "mean": [0.485, 0.456, 0.406],
                                "std": [0.229, 0.224, 0.225], "interpolation": "bilinear"},
                      "aug": None, "views": 0},
        "seed": 0, "device": "cpu", "engine": "torch", "batch_size": 64, "decode": "cpu", "amp": "off"},
        feature_dim=x.shape[1], num_aug_views=0, dtype="float32")
    prepare_store(path, dataset, spec)
    writer = StoreWriter(path)
    writer.write_batch(0, len(samples), np.asarray(x, np.float32), 0, None, {})
    writer.finish(1.0, 1.0)
    writer.close()
    return path


def clusters(sizes, dim=16, spread=6.0, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian clusters of these sizes: features [sum, dim] and each row's cluster."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(len(sizes), dim)) * spread
    which = np.repeat(np.arange(len(sizes)), sizes)
    return (centers[which] + rng.normal(size=(len(which), dim))).astype(np.float32), which


# --- strategies --------------------------------------------------------------------------------

def test_coreset_covers_small_clusters_that_random_misses():
    """Four big clusters hold 99% of the pool, four small ones 1%: 8 random picks land in the
    big ones; k-centre greedy reaches the small ones, which a head would otherwise never see."""
    x, which = clusters([500, 500, 500, 500, 5, 5, 5, 5])
    labelled = np.array([0, 1, 2])
    pool = np.setdiff1d(np.arange(len(x)), labelled)
    covered = {}
    for strategy in ("random", "coreset"):
        picked, _ = choose(strategy, x[pool], x[labelled], which[labelled], None, budget=8, seed=0)
        assert len(set(picked)) == 8
        covered[strategy] = set(which[pool[picked]])
    assert not covered["random"] & {4, 5, 6, 7}
    assert {4, 5, 6, 7} <= covered["coreset"]


@pytest.mark.parametrize("strategy", ["typiclust", "probcover"])
def test_low_budget_strategies_spread_over_the_clusters_without_labels(strategy):
    """TypiClust and ProbCover, from no label at all: 6 picks in 6 different clusters of 6."""
    x, which = clusters([60] * 6, seed=1)
    picked, scores = choose(strategy, x, x[:0], np.zeros(0), None, budget=6, seed=0, num_classes=6)
    assert len(set(picked)) == 6 and np.isfinite(scores).all()
    assert len(set(which[picked])) == 6


def test_typiclust_picks_typical_rows_not_outliers():
    """Each TypiClust pick sits in its cluster's dense middle: closer to the cluster's centre
    than the cluster's median row."""
    x, which = clusters([80] * 4, seed=2)
    picked, _ = choose("typiclust", x, x[:0], np.zeros(0), None, budget=4, seed=0)
    for p in picked:
        members = x[which == which[p]]
        centre = members.mean(axis=0)
        assert np.linalg.norm(x[p] - centre) < np.median(np.linalg.norm(members - centre, axis=1))


def test_margin_and_entropy_pick_the_most_doubtful_rows():
    p = np.array([[0.98, 0.01, 0.01], [0.5, 0.45, 0.05], [0.34, 0.33, 0.33], [0.7, 0.2, 0.1]])
    x = np.zeros((4, 2))
    margin, gaps = choose("margin", x, x[:0], np.zeros(0), p, budget=2)
    assert list(margin) == [2, 1] and np.allclose(gaps, [0.01, 0.05])
    entropy, _ = choose("entropy", x, x[:0], np.zeros(0), p, budget=1)
    assert list(entropy) == [2]
    with pytest.raises(ConfigError, match="needs a head"):
        choose("margin", x, x[:0], np.zeros(0), None, budget=1)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_gives_distinct_picks_and_clips_the_budget_to_the_pool(strategy):
    x, which = clusters([10, 10], seed=3)
    p = np.random.default_rng(0).dirichlet(np.ones(2), len(x))
    picked, scores = choose(strategy, x[2:], x[:2], which[:2], p[2:], budget=50, seed=0)
    assert sorted(picked) == list(range(len(x) - 2)) and len(scores) == len(x) - 2


def test_an_unknown_strategy_names_the_choices():
    with pytest.raises(ConfigError, match="--strategy 'smart'.*random, margin"):
        choose("smart", np.zeros((2, 2)), np.zeros((0, 2)), np.zeros(0), None, 1)


# --- the labelling curve ---------------------------------------------------------------------

def _labelled_store(tmp_path: Path) -> Path:
    x, which = clusters([120, 120, 120], dim=24, spread=1.2, seed=4)
    labels = which
    splits = np.where(np.arange(len(x)) % 4 == 3, "test", "train")
    return make_store(tmp_path / "curve.h5", x, labels, splits)


def test_label_curve_rises_with_labels_and_reaches_the_full_accuracy(tmp_path):
    from featx.explore import CurveConfig, label_curve

    config = CurveConfig(strategies=("random", "margin", "coreset"), seeds=3, kshots=(1, 5, 10))
    result = label_curve(_labelled_store(tmp_path), config, log=lambda line: None)
    assert result.train_rows == 270 and result.eval_split == "test" and result.eval_rows == 90
    for strategy, points in result.curves.items():
        labels = [p["labels"] for p in points]
        assert labels[0] == 3 and labels[-1] == 270 and labels == sorted(labels)
        assert points[-1]["top1_mean"] == pytest.approx(result.full["top1"])  # all labels: the full head
        assert points[-1]["top1_mean"] > points[0]["top1_mean"]
        for p in points:
            assert p["top1_lo"] <= p["top1_mean"] <= p["top1_hi"] and len(p["top1_runs"]) == 3
        reached = result.labels_to_95[strategy]
        assert reached is not None and reached <= 270
        first = next(p for p in points if p["labels"] == reached)
        assert first["top1_mean"] >= 0.95 * result.full["top1"]
    assert [k["per_class"] for k in result.kshot] == [1, 5, 10, "all"]
    assert [k["labels"] for k in result.kshot[:3]] == [3, 15, 30]
    files = result.write(tmp_path / "out")
    assert json.loads(files["json"].read_text())["labels_to_95"] == result.labels_to_95
    assert files["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_label_curve_refuses_a_store_with_unlabelled_train_rows(tmp_path):
    from featx.errors import StoreError
    from featx.explore import label_curve

    x, which = clusters([10, 10], seed=5)
    labels = np.where(np.arange(20) == 0, -1, which)
    splits = ["train"] * 16 + ["test"] * 4  # row 0: a train row without a label
    with pytest.raises(StoreError, match="every train and test sample labelled"):
        label_curve(make_store(tmp_path / "s.h5", x, labels, splits), log=lambda line: None)
