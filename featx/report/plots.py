"""The report's plots as PNG bytes (matplotlib, headless, through featx.evaluation.figures).

Each function takes result sidecars (the JSON written next to each head) and returns PNG bytes,
or None when the results hold nothing to plot.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from featx.evaluation.figures import png_bytes, pyplot

MAX_NAMED_POINTS = 30  # classes named beside their points; beyond, the names would pile up


def label(meta: dict) -> str:
    return f"{meta['backbone']} / {meta['kind']}"


def _test(meta: dict) -> dict | None:
    """The test metrics of a result (val where it has no test), or None in a damaged sidecar."""
    metrics = meta.get("metrics")
    found = (metrics.get("test") or metrics.get("val")) if isinstance(metrics, dict) else None
    return found if isinstance(found, dict) else None


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def accuracy_vs_throughput(results: list[dict]) -> bytes | None:
    points = []
    for m in results:
        test, extraction = _test(m), m.get("extraction")
        speed = extraction.get("images_per_second") if isinstance(extraction, dict) else None
        if test and _number(test.get("top1")) and _number(speed) and speed > 0:
            points.append((speed, test["top1"], label(m)))
    if not points:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for x, y, name in points:
        ax.scatter(x, y)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    xs = [x for x, _, _ in points]
    log = min(xs) > 0 and max(xs) / min(xs) > 10  # log only where it spreads the points
    if log:
        ax.set_xscale("log")
    ax.set_xlabel("extraction throughput (images/s" + (", log scale)" if log else ")"))
    ax.set_ylabel("test top-1")
    ax.set_title("accuracy vs extraction speed")
    ax.grid(alpha=0.3)
    return png_bytes(fig)


def per_class_vs_train_count(results: list[dict]) -> bytes | None:
    fig = per_class_figure(results)
    return png_bytes(fig) if fig else None


def per_class_figure(results: list[dict]):
    """Per class, its test recall against its training images; each point named by its class.
    Plain tick labels (73%, 120): a log axis over a narrow range labels itself 7.3x10^1."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

    usable = [m for m in results if _test(m) and m.get("train_counts")]
    if not usable:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    counts_seen = []
    for m in usable:
        counts = m["train_counts"]
        recalls = [c["recall"] for c in _test(m)["per_class"]]
        names = m.get("class_names") or m["classes"]
        ax.scatter(counts, recalls, label=label(m), alpha=0.7)
        if len(names) <= MAX_NAMED_POINTS:
            for name, x, y in zip(names, counts, recalls):
                ax.annotate(str(name), (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
        counts_seen += [c for c in counts if _number(c) and c > 0]
    if counts_seen and max(counts_seen) / min(counts_seen) > 10:  # log only where it spreads the points
        ax.set_xscale("log")
        ax.set_xlabel("training images of the class (log scale)")
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no 3.5 images
        ax.set_xlabel("training images of the class")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=None))
    ax.set_ylabel("per-class accuracy (recall)")
    ax.set_title("per-class accuracy vs training images")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig


def confusion(meta: dict) -> bytes | None:
    metrics = _test(meta)
    if not metrics:
        return None
    # As floats: a count beyond int64 (a damaged sidecar) would make an object array.
    matrix = np.array(metrics["confusion"], dtype=float)
    names = meta.get("class_names") or meta["classes"]
    plt = pyplot()
    size = min(2 + 0.5 * len(names), 12)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    ax.imshow(matrix, cmap="Blues")
    if len(names) <= 20:
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(j, i, f"{value:g}", ha="center", va="center", fontsize=8,
                    color="white" if value > matrix.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(label(meta))
    return png_bytes(fig)


def training_curves(results: list[dict]) -> bytes | None:
    fig = curves_figure(results)
    return png_bytes(fig) if fig else None


def _series(curve: list[dict], key: str) -> list[float]:
    return [c[key] if _number(c.get(key)) else float("nan") for c in curve]


def curves_figure(results: list[dict]):
    """The chosen head's training loss per epoch, and its val loss and val top-1 where it has
    them. A head chosen by cross-validation was refitted on train+val: no val curve, so only the
    lines (and the panel) with points are drawn, and the legend names only those."""
    series = []  # (result, epochs, train loss, val loss, val top-1) with at least one point
    for m in results:
        curve = m.get("curve") or []
        epochs = [c["epoch"] for c in curve]
        lines = [_series(curve, k) for k in ("train_loss", "val_loss", "val_top1")]
        if any(np.isfinite(v).any() for v in lines):
            series.append((m, epochs, *lines))
    if not series:
        return None
    has_top1 = any(np.isfinite(top1).any() for *_, top1 in series)
    plt = pyplot()
    fig, axes = plt.subplots(1, 2 if has_top1 else 1, figsize=(10 if has_top1 else 6, 4), squeeze=False)
    loss_ax = axes[0][0]
    for m, epochs, train, val, top1 in series:
        refit = " (refitted on train+val)" if _cross_validated(m) else ""
        colour = None
        if np.isfinite(train).any():  # a fine-tune's epoch 0 has none: a gap in the line
            colour = loss_ax.plot(epochs, train, label=f"{label(m)} train{refit}")[0].get_color()
        if np.isfinite(val).any():
            loss_ax.plot(epochs, val, linestyle="--", color=colour, label=f"{label(m)} val")
        if has_top1 and np.isfinite(top1).any():
            axes[0][1].plot(epochs, top1, color=colour, label=label(m))
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss")
    loss_ax.legend(fontsize=7)
    if has_top1:
        axes[0][1].set_xlabel("epoch")
        axes[0][1].set_ylabel("val top-1")
        axes[0][1].legend(fontsize=7)
    return fig


def _cross_validated(meta: dict) -> bool:
    selection = meta.get("selection")
    return isinstance(selection, dict) and selection.get("method") == "cv"


def reliability(results: list[dict]) -> bytes | None:
    usable = [m for m in results if _test(m) and _test(m).get("reliability")]
    if not usable:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], color="gray", linestyle=":", label="perfect calibration")
    for m in usable:
        bins = _test(m)["reliability"]
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o",
                label=f"{label(m)} (ECE {_test(m)['ece']:.3f})")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title("reliability diagram (test)")
    ax.legend(fontsize=7)
    return png_bytes(fig)


def thumbnail_jpeg(path: Path, size: int = 112) -> bytes | None:
    """A small JPEG of an image file, or None if it cannot be read any more."""
    from featx.errors import ImageError
    from featx.data.images import load_image

    try:
        img = load_image(path)
    except ImageError:
        return None
    img.thumbnail((size, size))
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()
