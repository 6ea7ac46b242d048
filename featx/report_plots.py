"""Plots written as PNG files (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path


def plot_lr_find(result, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(result.lrs, result.losses)
    ax.axvline(result.suggestion, color="tab:red", linestyle="--",
               label=f"suggested {result.suggestion:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (smoothed)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
