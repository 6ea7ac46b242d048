"""Plot primitives (matplotlib, headless): figures as PNG bytes, and the LR range test's curve.

Layer 0: numeric utilities (the LR finder) save their curves with this module; the report builds
its own figures on `pyplot()` and `png_bytes()`. matplotlib is imported on first use only.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display on servers and CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    pyplot().close(fig)
    return buffer.getvalue()


def lr_find_png(lrs: Sequence[float], losses: Sequence[float], suggestion: float | None = None) -> bytes:
    """The range test's smoothed loss against the learning rate (log x), the suggestion marked."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs, losses)
    if suggestion:
        ax.axvline(suggestion, color="tab:red", linestyle="--", label=f"suggested {suggestion:.2g}")
        ax.legend()
    ax.set_xscale("log")
    finite = [v for v in losses if np.isfinite(v)]
    if finite:  # the last steps explode: cut the axis where the rise is plain, keep the flat part readable
        low, start = min(finite), finite[0]
        ax.set_ylim(low - 0.05 * abs(low), min(max(finite), 2 * max(start, low)) + 0.05 * abs(low))
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (smoothed)")
    return png_bytes(fig)


def plot_lr_find(result, path: str | Path) -> Path:
    """Write `result`'s curve (anything with lrs, losses, suggestion) as a PNG at `path`."""
    Path(path).write_bytes(lr_find_png(result.lrs, result.losses, result.suggestion))
    return Path(path)
