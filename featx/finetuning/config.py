"""What a fine-tune is asked to do (`FinetuneConfig`) and what it gives back (`FinetuneResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from featx.config import check_settings
from featx.errors import ConfigError
from featx.probes.sweep import check_types
from featx.evaluation.metrics import Metrics
from featx.data.transforms import load_recipe
from featx.training.settings import FINETUNE, MAP_AUGS, SCHEDULES  # noqa: F401 (their old home)

# Whole network: lower rates at the bottom keep the pretrained filters (fastai's slice); the same
# top rate as the top-block runs (ELPV lite0 on CPU: train loss ~1 from the first epoch).
# Top on cached maps: a few blocks near the head, one rate for all (on ELPV, block14, 3 seeds:
# 79.0-79.4% test at ratio 1 vs 77.1% at ratio 3; benchmarks/finetune_cuts.py).
MODE_DEFAULTS = {"whole": {"epochs": 8, "lr": 3e-4, "lr_ratio": 10.0},
                 "top": {"epochs": 12, "lr": 3e-4, "lr_ratio": 1.0}}


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of a fine-tune. `epochs`, `lr` and `lr_ratio` left as None take the defaults of the
    mode (`MODE_DEFAULTS`): the whole network, or the top above `from_block` on cached maps."""
    epochs: int | None = None
    head_epochs: int = 0  # head-only warm-up epochs before the whole network trains
    batch_size: int = 32
    accumulate: int = 1  # gradient accumulation steps (effective batch = batch_size x accumulate)
    lr: float | None = None  # the head's (top group's) learning rate
    lr_ratio: float | None = None  # bottom group gets lr / lr_ratio
    groups: int = 3  # backbone layer groups for discriminative learning rates
    optimizer: str = "adamw"  # adamw | sgd
    weight_decay: float = 0.01
    schedule: str = "warmup-cosine"  # 10% linear warm-up, then cosine (featx.training.schedules)
    label_smoothing: float = 0.1
    balance: str = "none"  # none | weights
    train_bn: bool = False
    aug: str = "flips"  # recipe applied on the fly (featx/recipes/): a left-right mirror, no rotations
    # Off by default: the schedule anneals in the last epochs, where the best val epoch usually is.
    patience: int | None = None  # early stopping on val loss (the best epoch is kept either way)
    seed: int = 0
    device: str = "auto"
    amp: str = "bf16"  # CUDA only
    decode: str = "auto"  # auto | cpu | gpu: JPEG files decoded by nvjpeg on CUDA (auto = gpu on CUDA)
    workers: int | None = None
    from_block: str | None = None  # train only the blocks above this cut, on a store's cached maps
    map_aug: str = "flip"  # with from_block: symmetries of the cached maps (MAP_AUGS)

    def __post_init__(self) -> None:
        defaulted = []
        for name, value in MODE_DEFAULTS["top" if self.from_block else "whole"].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
                defaulted.append(name)
        # Not a field (kept out of asdict, checkpoints and cache keys): the fields that took the
        # mode's defaults, so `with_options(config, from_block=...)` takes the other mode's.
        object.__setattr__(self, "defaulted", tuple(defaulted))
        check_types(self, ints=("epochs", "head_epochs", "batch_size", "accumulate", "groups", "patience",
                                "seed", "workers"),
                    numbers=("lr", "lr_ratio", "weight_decay", "label_smoothing"))
        check_settings(self, FINETUNE)
        checks = [
            (self.head_epochs < self.epochs, "head_epochs", "in [0, epochs)"),
            (isinstance(self.train_bn, bool), "train_bn", "true or false"),
            (isinstance(self.aug, str) and bool(self.aug), "aug", "a recipe name, a YAML file or none"),
            (self.from_block is None or (isinstance(self.from_block, str) and self.from_block.strip()),
             "from_block", "a block name (featx backbones --cuts NAME)"),
        ]
        for ok, name, rule in checks:
            if not ok:
                raise ConfigError(f"{name} must be {rule}, got {getattr(self, name)!r}")
        if self.aug != "none":
            try:
                load_recipe(self.aug)
            except ConfigError as exc:  # named as the option, before a network is built
                raise ConfigError(f"aug: {exc}") from None


@dataclass
class FinetuneResult:
    head: Path  # the featx head (its sidecar names the fine-tuned backbone weights)
    weights: Path  # backbone weights: `featx extract --weights` takes this file
    val: Metrics | None
    test: Metrics | None
    seconds: float
    epochs_run: int
    best_epoch: int  # 0: no epoch beat the warm start on val loss, whose weights were kept
    resumed_from: int = 0  # epochs already done when this run started
    # Per epoch: train loss, val loss and top-1; first epoch 0, the warm start (no train loss).
    curve: list[dict] = field(default_factory=list)

    @property
    def kept_warm_start(self) -> bool:
        return self.best_epoch == 0
