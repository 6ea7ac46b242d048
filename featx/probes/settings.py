"""HeadConfig's choices and ranges, declared once (featx.config explains the tables): the config
checks itself against them and `featx train-head`, `lr-find` and `compare` build their options
from them. Torch-free (featx.probes.sweep, where HeadConfig lives, imports torch)."""

from __future__ import annotations

from featx.config import Between, OneOf

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "step", "cosine", "onecycle")
SELECTIONS = ("auto", "cv", "val")
METRICS = ("top1", "balanced_accuracy", "macro_f1")
BALANCES = ("none", "weights", "sampler")  # a class-weighted loss, or balanced sampling
NORMALIZATIONS = ("none", "standard", "l2")
FEATURES = ("all", "final")  # with or without the pooled block maps of extract --pool
CALIBRATIONS = ("none", "temperature")  # train-head --calibrate (featx.probes.calibrated)

HEAD = {
    "optimizer": OneOf(OPTIMIZERS),
    "schedule": OneOf(SCHEDULES),
    "balance": OneOf(BALANCES),
    "normalize": OneOf(NORMALIZATIONS),
    "features": OneOf(FEATURES),
    "select": OneOf(SELECTIONS),
    "metric": OneOf(METRICS),
    "folds": Between(2),
    "epochs": Between(1),
    "batch_size": Between(1),
    "hidden": Between(1),
    "patience": Between(1, optional=True),
    "step_size": Between(1),
    "lrs": Between(0.0, low_open=True),
    "weight_decays": Between(0.0),
    "momentum": Between(0.0),
    "gamma": Between(0.0, low_open=True),
    "dropout": Between(0.0, 1.0, high_open=True),
    "label_smoothing": Between(0.0, 1.0, high_open=True),
}
