"""Temperature scaling (featx.evaluation.calibration) and train-head's calibrated heads (issue 28):
probabilities a user can trust on small data, fitted without the test split."""

from __future__ import annotations

import re

import numpy as np
import pytest

from featx.errors import ConfigError
from featx.evaluation.calibration import (T_MAX, T_MIN, check_calibration, fit_temperature, nll_at,
                                          softmax_at, temperature_of)


def _draw(rng, logits: np.ndarray) -> np.ndarray:
    """One label per row drawn from softmax(logits)."""
    p = softmax_at(logits)
    return (p.cumsum(1) > rng.random((len(p), 1))).argmax(1)


def test_the_temperature_of_overconfident_logits_is_recovered():
    rng = np.random.default_rng(0)
    true = rng.normal(size=(4000, 5)) * 2
    y = _draw(rng, true)
    t = fit_temperature(3.0 * true, y)  # a head three times too sure of itself
    assert t == pytest.approx(3.0, rel=0.1)
    assert nll_at(3.0 * true, y, t) < nll_at(3.0 * true, y)


def test_the_fit_is_the_minimum_of_the_held_out_cross_entropy():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(500, 3)) * 4
    y = _draw(rng, logits / 2)
    t = fit_temperature(logits, y)
    for other in (t * 0.9, t * 1.1):
        assert nll_at(logits, y, t) <= nll_at(logits, y, other)


def test_the_temperature_keeps_the_argmax():
    logits = np.random.default_rng(2).normal(size=(50, 4))
    for t in (0.2, 1.0, 7.0):
        assert (softmax_at(logits, t).argmax(1) == logits.argmax(1)).all()


def test_degenerate_held_out_sets_stay_in_range():
    logits = np.array([[5.0, 0.0], [0.0, 5.0]])
    assert fit_temperature(logits, np.array([0, 1])) == T_MIN  # all right: sharpen, but only so far
    assert fit_temperature(logits, np.array([1, 0])) == T_MAX  # all wrong: as flat as allowed
    assert fit_temperature(np.zeros((0, 2)), np.zeros(0, np.int64)) == 1.0
    r = temperature_of(logits, np.array([1, 0]), "two images")
    assert r.fitted_on == "two images" and r.nll_after < r.nll_before


def test_calibrate_takes_none_or_temperature():
    check_calibration("none")
    check_calibration("temperature")
    with pytest.raises(ConfigError, match=re.escape("--calibrate must be none | temperature")):
        check_calibration("platt")
