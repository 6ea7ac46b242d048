"""featx.training.lr_range: the range test, its two rules, and the record that lets a fine-tune reuse it."""

from __future__ import annotations

import math

import pytest

from featx.training.lr_range import LRFindResult, cached_range_test, range_test


def _bowl(edge: float):
    """A loss that falls with the rate up to 1e-3, then explodes past `edge`."""
    def step(lr: float) -> float:
        if lr > edge:
            return 100.0
        return 2.0 - 0.2 * math.log10(min(lr, 1e-3) / 1e-7)
    return step


def test_minimum_rule_is_a_tenth_of_the_lowest_loss_rate():
    result = range_test(_bowl(edge=1e-1), 1e-7, 10.0, 120)
    assert result.diverged and result.lrs[-1] > 1e-1
    lowest = result.lrs[result.losses.index(min(result.losses))]
    assert result.suggestion == pytest.approx(lowest / 10)
    assert 1e-4 < result.suggestion < 1e-2  # the smoothing lags the raw minimum a little


def test_divergence_rule_reads_the_rate_where_the_loss_blew_up():
    """A warm-started network's loss is flat: its lowest point is noise, its divergence is not."""
    flat = range_test(lambda lr: 100.0 if lr > 2e-3 else 0.9, 1e-6, 1.0, 120, rule="divergence")
    assert flat.diverged and flat.rule == "divergence"
    assert 2e-4 < flat.suggestion < 4e-4  # a tenth of 2e-3, within two of the test's steps
    assert flat.lrs[-1] / flat.lrs[-2] == pytest.approx(10 ** (6 / 119))


def test_a_loss_that_never_diverges_is_said_so():
    result = range_test(lambda lr: 1.0, 1e-6, 1e-2, 20, rule="divergence")
    assert not result.diverged and len(result.lrs) == 20
    assert result.lrs[-1] == pytest.approx(1e-2)


def test_the_record_is_reused_for_the_same_settings_only(tmp_path):
    calls = []

    def find() -> LRFindResult:
        calls.append(1)
        return LRFindResult([1e-5, 1e-4, 1e-3], [1.0, 0.9, 4.0], 1e-4 * len(calls), "divergence")

    stem = tmp_path / "run.lr-find"
    first, reused = cached_range_test(stem, {"lr_ratio": 10.0, "groups": (1, 2)}, find)
    assert not reused and first.suggestion == pytest.approx(1e-4)
    assert (tmp_path / "run.lr-find.csv").read_text().startswith("lr,loss\n1e-05,1\n")
    assert (tmp_path / "run.lr-find.png").stat().st_size > 0
    again, reused = cached_range_test(stem, {"lr_ratio": 10.0, "groups": (1, 2)}, find)
    assert reused and again == first and len(calls) == 1
    other, reused = cached_range_test(stem, {"lr_ratio": 3.0, "groups": (1, 2)}, find)
    assert not reused and len(calls) == 2 and other.suggestion == pytest.approx(2e-4)
    _, reused = cached_range_test(stem, {"lr_ratio": 3.0, "groups": (1, 2)}, find, refresh=True)
    assert not reused and len(calls) == 3
    (tmp_path / "run.lr-find.json").write_text('{"settings": ')  # cut short by a kill
    _, reused = cached_range_test(stem, {"lr_ratio": 3.0, "groups": (1, 2)}, find)
    assert not reused and len(calls) == 4


def test_a_loss_that_overflows_at_once_still_gives_a_rate():
    result = range_test(lambda lr: float("nan"), 1e-6, 1.0, 50)
    assert result.diverged and len(result.lrs) == 1 and result.suggestion == pytest.approx(1e-7)
