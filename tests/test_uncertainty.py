"""featx.evaluation.uncertainty: bootstrap intervals, paired differences, McNemar."""

from __future__ import annotations

import numpy as np
import pytest

from featx.evaluation.uncertainty import ScoredSamples, align, bootstrap_interval, mcnemar, metric_intervals, paired_difference


def _accuracy(n: int, right: int, seed: int = 0) -> ScoredSamples:
    """n binary predictions, `right` of them correct, in a seeded order."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n)
    correct = np.zeros(n, bool)
    correct[rng.permutation(n)[:right]] = True
    return ScoredSamples(label, np.where(correct, label, 1 - label), num_classes=2)


def test_accuracy_interval_matches_the_normal_approximation_on_655_images():
    """507 of 655 right (77.4%): by hand, 1.96 * sqrt(.774 * .226 / 655) = 0.0320."""
    p = _accuracy(655, 507)
    lo, hi = metric_intervals(p)["top1"]
    half = 1.96 * np.sqrt(507 / 655 * (1 - 507 / 655) / 655)
    assert half == pytest.approx(0.0320, abs=5e-4)
    assert lo == pytest.approx(507 / 655 - half, abs=0.006) and hi == pytest.approx(507 / 655 + half, abs=0.006)
    assert (lo, hi) == metric_intervals(p)["top1"]  # seeded: the same interval every time
    assert bootstrap_interval(p.correct) == (lo, hi)


def test_every_image_right_has_no_spread():
    p = _accuracy(20, 20)
    assert metric_intervals(p)["top1"] == (1.0, 1.0)
    assert metric_intervals(p)["balanced_accuracy"] == (1.0, 1.0)


def test_balanced_accuracy_and_f1_resample_per_class_counts():
    """One class always right, the other always wrong: recall (1, 0) on every resample that
    holds both classes, so balanced accuracy sits at 0.5 whatever the mix."""
    label = np.array([0] * 50 + [1] * 50)
    p = ScoredSamples(label, np.zeros(100, int), num_classes=2)
    lo, hi = metric_intervals(p)["balanced_accuracy"]
    assert lo == hi == 0.5
    assert set(metric_intervals(p)) == {"top1", "balanced_accuracy", "macro_f1"}  # no probabilities


def test_identical_results_tie_and_a_clear_gap_does_not():
    a = _accuracy(300, 240)
    same = paired_difference(a, a)
    assert all(d.delta == 0 and not d.significant for d in same.values())
    worse = ScoredSamples(a.label, np.where(np.arange(300) < 100, 1 - a.label, a.pred), num_classes=2)
    gap = paired_difference(a, worse)["top1"]
    assert gap.delta > 0.2 and gap.low > 0 and gap.significant


def test_lite0_against_lite2_on_655_images_is_a_tie():
    """The issue's anchor: 77.4% vs 76.5% on the same 655 images, disagreeing on ~15% of them."""
    rng = np.random.default_rng(3)
    label = rng.integers(0, 2, 655)
    right_a = np.zeros(655, bool)
    right_a[:507] = True
    right_b = right_a.copy()
    right_b[:55] = False  # a right, b wrong on 55 images
    right_b[507:556] = True  # b right, a wrong on 49
    order = rng.permutation(655)
    a = ScoredSamples(label, np.where(right_a[order], label, 1 - label), num_classes=2)
    b = ScoredSamples(label, np.where(right_b[order], label, 1 - label), num_classes=2)
    assert (a.correct.mean(), b.correct.mean()) == (pytest.approx(0.774, abs=1e-3), pytest.approx(0.765, abs=1e-3))
    d = paired_difference(a, b)["top1"]
    assert d.low < 0 < d.high and not d.significant
    assert mcnemar(a.correct, b.correct) > 0.05


def test_mcnemar_by_hand():
    """10 images only a gets right, 2 only b: p = 2 * (C(12,0) + C(12,1) + C(12,2)) / 2^12."""
    a = np.array([True] * 10 + [False] * 2 + [True] * 5)
    b = np.array([False] * 10 + [True] * 2 + [True] * 5)
    assert mcnemar(a, b) == pytest.approx(2 * (1 + 12 + 66) / 4096)
    assert mcnemar(a, a) == 1.0


def test_align_pairs_by_path_and_refuses_other_images():
    assert align(["a", "b", "c"], ["c", "a", "b"]).tolist() == [1, 2, 0]
    assert align(["a", "b"], ["a", "x"]) is None
    assert align(["a", "b"], ["a"]) is None


def test_paired_difference_refuses_other_labels():
    a = _accuracy(10, 5)
    b = ScoredSamples(1 - a.label, a.pred, num_classes=2)
    with pytest.raises(ValueError, match="same images"):
        paired_difference(a, b)
