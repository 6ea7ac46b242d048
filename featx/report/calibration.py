"""The report's calibration table: each head's temperature, and its test NLL and ECE at
temperature 1 (as trained) and at the fitted temperature, each with its 95% interval.

train-head records these in the sidecar's `calibration` (featx.probes.calibrated): the
temperature is fitted on out-of-fold or val predictions, never the test split, so the test
numbers after it are an honest estimate. The comparison table shows the calibrated values.
"""

from __future__ import annotations

from featx.evaluation.calibration import accuracy_interval
from featx.report.plots import label

TITLE = "Calibration (temperature scaling)"
NOTE = ("Test NLL and ECE at temperature 1 (the head as trained) and at the head's fitted temperature, "
        "with 95% bootstrap intervals over the test images. The temperature is fitted on held-out "
        "predictions (out-of-fold, or the val split), never on the test split; the comparison table "
        "above shows the calibrated values. Dividing the logits by one temperature leaves top-1 unchanged. "
        "The held-out images' top-1 is shown with its 95% interval: the head's mean confidence is set to about "
        "that top-1, so its probabilities can be off by as much as the interval is wide.")
HEADERS = ["result", "temperature", "fitted on", "NLL at T=1", "NLL calibrated", "ECE at T=1", "ECE calibrated"]


def calibration_section(results: list[dict]) -> tuple[str, str, list[str], list[list[str]]] | None:
    """(title, note, headers, rows), one row per result; None when no result records a calibration
    (heads saved before it, fine-tuned heads)."""
    rows = [_row(m) for m in results]
    if not any(rows):
        return None
    return TITLE, NOTE, HEADERS, [row or [label(m), _temperature(m), "-", "-", "-", "-", "-"]
                                  for m, row in zip(results, rows)]


def _row(meta: dict) -> list[str] | None:
    record = meta.get("calibration")
    if not isinstance(record, dict):
        return None
    if record.get("method") != "temperature":
        why = record.get("why") if isinstance(record.get("why"), str) else "not calibrated"
        return [label(meta), "1 (none)", why, "-", "-", "-", "-"]
    test = record.get("test") if isinstance(record.get("test"), dict) else {}
    before, after = test.get("before"), test.get("after")
    fitted_on = record.get("fitted_on") if isinstance(record.get("fitted_on"), str) else "-"
    top1, images = record.get("fit_top1"), record.get("fit_images")
    if _number(top1) and _number(images) and images >= 1:  # heads saved since issue 28
        lo, hi = accuracy_interval(top1, int(images))
        fitted_on += f", top-1 {top1:.3f} [{lo:.3f}, {hi:.3f}]"
    return [label(meta), _temperature(meta, record), fitted_on,
            _cell(before, "nll"), _cell(after, "nll"), _cell(before, "ece"), _cell(after, "ece")]


def _temperature(meta: dict, record: dict | None = None) -> str:
    t = (record or {}).get("temperature", meta.get("temperature"))
    return f"{t:.3g}" if _number(t) else "-"


def _cell(side, metric: str) -> str:
    """'0.812 [0.700, 0.934]', the value alone without an interval, '-' without a value."""
    if not isinstance(side, dict) or not _number(side.get(metric)):
        return "-"
    bounds = (side.get("intervals") or {}).get(metric) if isinstance(side.get("intervals"), dict) else None
    text = f"{side[metric]:.3f}"
    if isinstance(bounds, (list, tuple)) and len(bounds) == 2 and all(_number(b) for b in bounds):
        return f"{text} [{bounds[0]:.3f}, {bounds[1]:.3f}]"
    return text


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
