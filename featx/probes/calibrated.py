"""train_head's temperature: one scalar fitted on held-out predictions of the chosen head.

The cross-validated path fits it on the chosen settings' out-of-fold predictions (every
train+val image, each scored by a head that did not train on it: featx.probes.selection.choose
already fitted it there); the val path on the val split. The test split is never used: its
metrics are reported at the fitted temperature, next to what they were before it.

Only heads whose probabilities are the softmax of a linear or MLP read-out are rescaled (linear,
mlp, logreg); a k-NN's vote shares and an SVM's margins keep temperature 1.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from featx.errors import ConfigError
from featx.evaluation.calibration import (TRUSTED_MARGIN, Temperature, accuracy_interval, images_for_margin, softmax_at,
                                          temperature_of)
from featx.evaluation.metrics import Metrics
from featx.heads.scoring import Normalizer, linear_scores
from featx.probes.settings import CALIBRATIONS

CALIBRATED_KINDS = ("linear", "mlp", "logreg")


def check_calibration(calibrate: str) -> None:
    """`calibrate` is one of CALIBRATIONS (train-head --calibrate)."""
    if calibrate not in CALIBRATIONS:
        raise ConfigError(f"--calibrate must be {' | '.join(CALIBRATIONS)}, got {calibrate!r}")


def head_logits(tensors: dict[str, np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """Normalised features -> the head's logits (its layers.* tensors; others are ignored)."""
    return lambda x: linear_scores(tensors, x, softmax_output=False)


def calibrated_scores(tensors: dict[str, np.ndarray], temperature: float) -> Callable[[np.ndarray], np.ndarray]:
    """Normalised features -> probabilities at `temperature`."""
    logits = head_logits(tensors)
    return lambda x: softmax_at(logits(x), temperature)


def fit_head_temperature(calibrate: str, kind: str, tensors: dict[str, np.ndarray], data,
                         normalizer: Normalizer, fitted: Temperature | None = None) -> Temperature | None:
    """The head's temperature, or None where it keeps 1 (--calibrate none, a kind without
    logits, or no held-out images). `fitted`: the one cross-validation found (out-of-fold);
    else it is fitted on the val split of `data` (a FeatureData), block by block."""
    if calibrate == "none" or kind not in CALIBRATED_KINDS:
        return None
    if fitted is not None:
        return fitted
    logits = head_logits(tensors)
    parts = [(logits(normalizer(x)), y) for x, y, _ in data.split_blocks("val") if len(y)]
    if not parts:
        return None
    z, y = (np.concatenate(p) for p in zip(*parts))
    return temperature_of(z, y.astype(np.int64), f"the val split's predictions ({len(y)} images)")


def array_temperature(calibrate: str, kind: str, tensors: dict[str, np.ndarray], x_val: np.ndarray,
                      y_val: np.ndarray) -> float:
    """fit_head_temperature on arrays in memory (normalised val features and their labels), as a
    number: 1.0 where the head keeps its probabilities as trained."""
    if calibrate == "none" or kind not in CALIBRATED_KINDS or not len(y_val):
        return 1.0
    return temperature_of(head_logits(tensors)(x_val), np.asarray(y_val, np.int64), "val").value


def calibration_record(calibrate: str, kind: str, temperature: Temperature | None,
                       before: Metrics | None, after: Metrics | None) -> dict:
    """The sidecar's `calibration`: how and on what the temperature was fitted, and the test
    NLL and ECE (with their 95% intervals) at temperature 1 and at the fitted one."""
    if temperature is None:
        why = ("--calibrate none" if calibrate == "none" else
               f"a {kind} head's scores are not softmax logits" if kind not in CALIBRATED_KINDS else
               "no held-out predictions to fit it on (no val split)")
        return {"method": "none", "temperature": 1.0, "why": why}

    def side(m: Metrics | None) -> dict | None:
        if m is None or m.nll is None:
            return None
        return {"nll": m.nll, "ece": m.ece, "intervals": {k: m.intervals[k] for k in ("nll", "ece")
                                                           if k in m.intervals}}

    return {"method": "temperature", **temperature.to_dict(),
            "test": {"before": side(before), "after": side(after)}}


def describe(record: dict) -> str:
    """One line for train-head's output: the temperature, what it was fitted on, and the test NLL
    and ECE before -> after."""
    if record.get("method") != "temperature":
        return f"calibration: none ({record.get('why', '')})"
    line = (f"calibrated: temperature {record['temperature']:.3g}, fitted on {record['fitted_on']} "
            f"(NLL {record['fit_nll_before']:.3f} -> {record['fit_nll_after']:.3f})")
    test = record.get("test") or {}
    before, after = test.get("before"), test.get("after")
    if before and after:
        line += (f"; test NLL {_with(before, 'nll')} -> {_with(after, 'nll')}, "
                 f"ECE {_with(before, 'ece')} -> {_with(after, 'ece')}")
    return line


def rough_probabilities(record: dict) -> str | None:
    """A note for train-head's output when the temperature was fitted on too few images to trust
    the probabilities to TRUSTED_MARGIN: the head's mean confidence is about the top-1 of those
    images, and that top-1 is the head's accuracy only to within its 95% interval. None otherwise,
    and for heads saved before the margin was recorded."""
    margin, top1, images = (record.get(k) for k in ("fit_margin", "fit_top1", "fit_images"))
    if record.get("method") != "temperature" or not all(isinstance(v, (int, float)) for v in (margin, top1, images)):
        return None
    if margin <= TRUSTED_MARGIN or images < 1:
        return None
    lo, hi = accuracy_interval(top1, int(images))
    # The images needed at the least favourable accuracy the interval allows (nearest 0.5): a
    # top-1 of 0 on 4 images does not mean that 35 would do.
    needed = images_for_margin(min(max(0.5, lo), hi))
    more = f"{needed - images:,.0f} more"
    if "out-of-fold" in str(record.get("fitted_on", "")):  # cross-validation: every train+val image
        where, more = "train+val", f"{more}; the test split comes on top"
    else:
        where = "val"
    return (f"probabilities are rough: the temperature was fitted on {images:g} images, whose top-1 "
            f"({top1:.3f}) puts the head's accuracy between {lo:.2f} and {hi:.2f} (95%), so its "
            f"confidence can be off by about ±{margin:.2f}; about {needed:,} labelled {where} images "
            f"({more}) would make that ±{TRUSTED_MARGIN:.2f}")


def _with(side: dict, metric: str) -> str:
    bounds = side.get("intervals", {}).get(metric)
    value = f"{side[metric]:.3f}"
    return f"{value} [{bounds[0]:.3f}, {bounds[1]:.3f}]" if bounds else value
