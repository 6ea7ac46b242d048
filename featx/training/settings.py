"""FinetuneConfig's choices and ranges, declared once (featx.config explains the tables): the
config checks itself against them and `featx finetune` builds its options from them. Here, not in
featx.finetuning, because that package imports torch and `featx --help` must not."""

from __future__ import annotations

from featx.config import Between, OneOf
from featx.runtime.settings import AMP_MODES, DECODES

SCHEDULES = ("warmup-cosine", "onecycle", "cosine")  # shapes: featx.training.schedules
OPTIMIZERS = ("adamw", "sgd")
BALANCES = ("none", "weights")  # a class-weighted loss
# Symmetries of cached maps: left-right (the default), + top-bottom, + 90-degree turns (opt-in:
# only for orientation-free images; ELPV cells rotated by 90 degrees lost 13-17 points, issue 21).
MAP_AUGS = ("flip", "hv-flip", "rot90-flip", "none")

FINETUNE = {
    "epochs": Between(1),
    "batch_size": Between(1),
    "accumulate": Between(1),
    "lr": Between(0.0, low_open=True),
    "lr_ratio": Between(1.0),
    "groups": Between(1),
    "patience": Between(1, optional=True),
    "workers": Between(0, optional=True),
    "head_epochs": Between(0),
    "weight_decay": Between(0.0),
    "label_smoothing": Between(0.0, 1.0, high_open=True),
    "optimizer": OneOf(OPTIMIZERS),
    "schedule": OneOf(SCHEDULES),
    "balance": OneOf(BALANCES),
    "map_aug": OneOf(MAP_AUGS),
    "decode": OneOf(DECODES),
    "amp": OneOf(AMP_MODES),
}
