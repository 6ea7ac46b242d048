"""featx.evaluation.metrics: the numbers in every report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from featx.evaluation.metrics import Metrics, evaluate, expected_calibration_error


def test_metrics_on_a_small_hand_checked_case():
    y = np.array([0, 0, 0, 1, 1, 2])
    probs = np.array([[.8, .1, .1], [.6, .3, .1], [.2, .7, .1], [.1, .8, .1], [.3, .4, .3], [.5, .2, .3]])
    m = evaluate(y, probs, ["a", "b", "c"], [f"p{i}" for i in range(6)])
    assert m.top1 == pytest.approx(4 / 6)
    assert m.confusion == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    a, b, c = m.per_class
    assert (a.precision, a.recall, a.support) == (pytest.approx(2 / 3), pytest.approx(2 / 3), 3)
    assert (b.precision, b.recall) == (pytest.approx(2 / 3), 1.0)
    assert (c.precision, c.recall, c.f1) == (0.0, 0.0, 0.0)
    assert m.balanced_accuracy == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert m.macro_f1 == pytest.approx((2 / 3 + 0.8 + 0) / 3)
    assert m.nll == pytest.approx(-np.mean(np.log([.8, .6, .2, .8, .4, .3])))
    assert m.top5 is None
    assert m.worst[0]["path"] == "p2" and m.worst[0]["predicted"] == "b"
    assert [w["path"] for w in m.worst] == ["p2", "p5"]


def test_top5_with_many_classes_and_no_probabilities_for_margins():
    y = np.array([0, 1])
    scores = np.tile(np.arange(6, dtype=float), (2, 1))  # class 5 first ... class 0 last
    m = evaluate(y, scores, list("abcdef"), probabilities=False)
    assert m.top5 == 0.5 and m.nll is None and m.ece is None and m.worst == []


def test_ece_is_zero_when_calibrated_and_large_when_overconfident():
    y = np.array([0, 1] * 50)
    calibrated = np.array([[0.5, 0.5]] * 100)
    assert expected_calibration_error(calibrated, y) == pytest.approx(0.0)
    overconfident = np.array([[0.99, 0.01]] * 100)
    assert expected_calibration_error(overconfident, y) == pytest.approx(0.49)


def test_every_metric_carries_a_seeded_interval_and_per_image_predictions():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 200)
    probs = rng.dirichlet(np.ones(5), 200)
    probs[np.arange(200)[:120], y[:120]] += 2  # 120 of 200 right
    probs /= probs.sum(1, keepdims=True)
    m = evaluate(y, probs, list("abcde"), [f"p{i}" for i in range(200)])
    assert set(m.intervals) == {"top1", "top5", "balanced_accuracy", "macro_f1", "nll", "ece"}
    for name, (lo, hi) in m.intervals.items():
        assert lo <= hi, name
    for name in ("top1", "top5", "balanced_accuracy", "macro_f1", "nll"):
        assert m.intervals[name][0] <= getattr(m, name) <= m.intervals[name][1], name
    assert m.interval("top1") == tuple(evaluate(y, probs, list("abcde")).intervals["top1"])  # seeded
    paths, kept = m.predictions()
    assert paths[:2] == ["p0", "p1"] and kept.correct.mean() == pytest.approx(m.top1)
    again = Metrics.from_dict(json.loads(json.dumps(m.to_dict())))  # as a head's sidecar stores it
    assert again.interval("top1") == m.interval("top1") and again.predictions()[0] == paths


def test_results_without_intervals_still_load():
    """A sidecar written before intervals: no interval, no pairing, no error."""
    m = evaluate(np.array([0, 1]), np.array([[.9, .1], [.2, .8]]), ["a", "b"])
    old = {k: v for k, v in m.to_dict().items() if k not in ("intervals", "bootstrap", "samples")}
    m = Metrics.from_dict(old)
    assert m.interval("top1") is None and m.predictions() is None


def test_svm_margins_have_no_probability_intervals():
    m = evaluate(np.array([0, 1, 1]), np.array([[2.0, -1], [0.5, 1], [3, 0]]), ["a", "b"], probabilities=False)
    assert set(m.intervals) == {"top1", "balanced_accuracy", "macro_f1"}
    assert "p_true" not in m.samples
