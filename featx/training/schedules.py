"""Learning-rate schedules: the multiplier of the base rate, a pure function of the position in the run.

    schedule_factor("warmup-cosine", step, total)      # fine-tunes (the default there)
    schedule_factor("cosine", step, total)             # heads (the default there)

Each name means one shape, wherever it is used (heads, fine-tunes):
- "none": constant.
- "cosine": cosine from 1 to 0.
- "onecycle": torch's OneCycleLR shape (Smith's one-cycle as fastai runs it): a 30% cosine
  warm-up from 1/25, then cosine down to 1/1e4.
- "warmup-cosine": a 10% linear warm-up from 0.04, then cosine down to 0 (before 2026-11 the
  fine-tunes called this one "onecycle"; their old checkpoints are read with the new name).
- "step": StepLR, gamma every `step_size` epochs (a function of the epoch, not the step).
"""

from __future__ import annotations

import math
from typing import Callable

from featx.errors import ConfigError


def constant(t: float) -> float:
    return 1.0


def cosine(t: float) -> float:
    return 0.5 * (1 + math.cos(math.pi * t))


def onecycle(t: float) -> float:
    if t < 0.3:
        return 1 / 25 + (1 - 1 / 25) * (0.5 - 0.5 * math.cos(math.pi * t / 0.3))
    return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * (t - 0.3) / 0.7))


def warmup_cosine(t: float, warmup: float = 0.1) -> float:
    if t < warmup:
        return 0.04 + 0.96 * t / warmup
    return cosine((t - warmup) / (1 - warmup))


def step_decay(epoch: int, step_size: int, gamma: float) -> float:
    return gamma ** (epoch // step_size)


# Shapes of the fraction of the run done, t in [0, 1].
SHAPES: dict[str, Callable[[float], float]] = {
    "none": constant, "cosine": cosine, "onecycle": onecycle, "warmup-cosine": warmup_cosine,
}
SCHEDULES = (*SHAPES, "step")


def schedule_factor(kind: str, step: int, total: int, epoch: int = 0, step_size: int = 7,
                    gamma: float = 0.1) -> float:
    """Multiplier of the base learning rate at optimiser step `step` of `total` (0-based; the
    epoch for "step"). Steps past `total` stay at the end of the shape."""
    if kind == "step":
        return step_decay(epoch, step_size, gamma)
    if kind not in SHAPES:
        raise ConfigError(f"unknown schedule {kind!r} (use {' | '.join(SCHEDULES)})")
    return SHAPES[kind](min(step / max(total, 1), 1.0))
