"""Which results are tied with the best, metric by metric, instead of one highlighted winner.

    rows = standings(results)        # per result: {metric: Standing(value, interval, mark, diff)}
    rows[i]["top1"].mark             # "best" | "tied" | "worse" | "unpaired" | ""

Each result's test metric carries its 95% bootstrap interval (from its sidecar). Per metric, the
best value is found; every other result scored on the same test images (matched by path, same
labels) is compared with it by a paired bootstrap of the difference (featx.evaluation.uncertainty): a
difference whose 95% interval holds 0 is a tie. Results on other images, or saved before
per-image predictions were kept, are "unpaired": shown, not compared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from featx.evaluation.metrics import predictions_of
from featx.evaluation.uncertainty import DIRECTIONS, PAIRED_TEST, Difference, ScoredSamples, align, paired_difference

METRICS = ("top1", "top5", "balanced_accuracy", "macro_f1", "nll", "ece")
HOW = PAIRED_TEST


@dataclass(frozen=True)
class Standing:
    """One result on one metric."""

    value: float | None
    interval: tuple[float, float] | None  # 95% bootstrap interval; None in older results
    mark: str  # best | tied | worse | unpaired | "" (no value, or nothing to compare with)
    difference: Difference | None = None  # this result minus the best, paired


def split_metrics(meta: dict) -> dict:
    """The metrics a report shows of a result: test, or val when it has no test split."""
    metrics = meta.get("metrics") if isinstance(meta.get("metrics"), dict) else {}
    split = metrics.get("test") or metrics.get("val")
    return split if isinstance(split, dict) else {}


def number(value) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def interval(split: dict, metric: str) -> tuple[float, float] | None:
    """A stored [lo, hi], or None when there is none (or it is not two numbers)."""
    intervals = split.get("intervals")
    bounds = intervals.get(metric) if isinstance(intervals, dict) else None
    if not isinstance(bounds, list) or len(bounds) != 2:
        return None
    lo, hi = number(bounds[0]), number(bounds[1])
    return (lo, hi) if lo is not None and hi is not None and lo <= hi else None


def predictions(meta: dict) -> tuple[list[str], ScoredSamples] | None:
    """(paths, per-image test predictions) of a result, or None."""
    split = split_metrics(meta)
    classes = meta.get("classes")
    if not isinstance(classes, list) or not classes:
        return None
    return predictions_of(split.get("samples"), len(classes))


def paired(a: tuple[list[str], ScoredSamples] | None,
           b: tuple[list[str], ScoredSamples] | None) -> dict[str, Difference] | None:
    """a - b per metric on the same images (matched by path), or None when they are not."""
    if a is None or b is None:
        return None
    order = align(b[0], a[0])  # a's images in b's order
    if order is None:
        return None
    a_in_b_order = a[1].take(order)
    if not (a_in_b_order.label == b[1].label).all():
        return None
    return paired_difference(a_in_b_order, b[1])


def standings(results: list[dict], metrics: tuple[str, ...] = METRICS) -> list[dict[str, Standing]]:
    """Per result, per metric: value, interval and how it stands against the best."""
    kept = [predictions(m) for m in results]
    cache: dict[tuple[int, int], dict | None] = {}
    out: list[dict[str, Standing]] = [{} for _ in results]
    for metric in metrics:
        splits = [split_metrics(m) for m in results]
        values = [number(s.get(metric)) for s in splits]
        have = [i for i, v in enumerate(values) if v is not None]
        best = None
        if len(have) > 1:
            pick = max if DIRECTIONS[metric] == "max" else min
            best = pick(have, key=lambda i: values[i])
        for i, split in enumerate(splits):
            mark, diff = "", None
            if best is not None and values[i] is not None:
                if i == best:
                    mark = "best"
                else:
                    if (i, best) not in cache:
                        cache[(i, best)] = paired(kept[i], kept[best])
                    diff = (cache[(i, best)] or {}).get(metric)
                    mark = "unpaired" if diff is None else "worse" if diff.significant else "tied"
            out[i][metric] = Standing(values[i], interval(split, metric), mark, diff)
    return out
