"""The learning-rate range test (Smith 2017; fastai's `lr_find`), for anything trained in steps.

The rate grows exponentially from `start` to `end`, one training step each, until the smoothed
loss diverges (4x its best). Heads on cached features (`featx lr-find STORE`) and fine-tunes
through the network (`featx finetune ... --lr-find`) both run it through `range_test`, which
only needs "take one step at this rate and tell me the loss".

Two rules read a rate off the curve (`SUGGESTIONS`):
- "minimum": a tenth of the rate with the lowest loss (fastai's lr_min), for heads trained from
  scratch, whose loss falls from log(classes) before it diverges.
- "divergence": a tenth of the rate where the loss diverged, for networks warm-started from a
  trained head: their loss is at its floor from the first step, so the minimum is batch noise (ELPV
  lite0 above block14: lowest loss at 1e-7 in one run, 6e-5 in another), while the divergence is
  sharp (the loss doubles within two steps). Its tenth, 3-7e-4 over 3 seeds, is within 2.5x of
  the rate a sweep found best (3e-4): 78.8% test at the found 4.8e-4, 79.4% at 3e-4.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from featx.runtime.atomic import atomic_write_text
from featx.evaluation.figures import plot_lr_find
from featx.runtime.progress import progress_bar

SMOOTHING = 0.9  # exponential moving average of the step losses (debiased)
DIVERGED = 4.0  # stop once the smoothed loss exceeds this multiple of its best


@dataclass
class LRFindResult:
    lrs: list[float]
    losses: list[float]  # exponentially smoothed training loss at each learning rate
    suggestion: float  # read off the curve by one of SUGGESTIONS
    rule: str = "minimum"
    diverged: bool = True  # False: the loss never diverged up to the end rate

    def save(self, stem: str | Path) -> tuple[Path, Path]:
        """STEM.csv (lr,loss: `featx report` plots every *.lr-find.csv it finds) and STEM.png."""
        stem = Path(stem)
        csv_path = atomic_write_text(stem.with_name(stem.name + ".csv"), "lr,loss\n" + "".join(
            f"{a:.6g},{b:.6g}\n" for a, b in zip(self.lrs, self.losses)))
        return csv_path, plot_lr_find(self, stem.with_name(stem.name + ".png"))


def tenth_of_minimum(lrs: list[float], losses: list[float]) -> float:
    finite = np.where(np.isfinite(losses), losses, np.inf)  # a first step can already overflow
    return lrs[int(np.argmin(finite))] / 10


def tenth_of_divergence(lrs: list[float], losses: list[float]) -> float:
    return lrs[-1] / 10  # the test stops at the first rate whose loss diverged


SUGGESTIONS = {"minimum": tenth_of_minimum, "divergence": tenth_of_divergence}


def range_test(step: Callable[[float], float], start: float, end: float, steps: int,
               rule: str = "minimum", title: str = "lr-find", show_progress: bool = False) -> LRFindResult:
    """`step(lr)` trains one step at learning rate `lr` and returns that step's loss."""
    gamma = (end / start) ** (1 / max(steps - 1, 1))
    lrs, losses, smooth, best, diverged = [], [], 0.0, float("inf"), False
    with progress_bar(steps, title, unit="step", enabled=show_progress) as advance:
        for i in range(steps):
            lr = start * gamma ** i
            smooth = SMOOTHING * smooth + (1 - SMOOTHING) * step(lr)
            debiased = smooth / (1 - SMOOTHING ** (i + 1))
            lrs.append(lr)
            losses.append(debiased)
            best = min(best, debiased)
            advance(1)
            if debiased > DIVERGED * best or not math.isfinite(debiased):
                diverged = True
                break
    return LRFindResult(lrs, losses, SUGGESTIONS[rule](lrs, losses), rule, diverged)


def cached_range_test(stem: str | Path, settings: dict, find: Callable[[], LRFindResult],
                      refresh: bool = False) -> tuple[LRFindResult, bool]:
    """`find()` once per settings: its result is kept in STEM.json (+ the curve as STEM.csv/.png),
    so re-running a fine-tune that found its rate (to resume it) starts from the same rate
    without repeating the test. Returns (result, whether it came from the file)."""
    record = Path(stem).with_name(Path(stem).name + ".json")
    settings = json.loads(json.dumps(settings))  # tuples as lists, as they come back from the file
    try:
        saved = json.loads(record.read_text())
        if saved.get("settings") == settings and not refresh:
            return LRFindResult(**saved["result"]), True
    except (OSError, ValueError, TypeError, KeyError):
        pass  # no record, or an unreadable one: find again
    result = find()
    result.save(stem)
    atomic_write_text(record, json.dumps({"settings": settings, "result": asdict(result)}))
    return result, False
