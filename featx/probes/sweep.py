"""Torch heads trained many at once: H heads (a grid of learning rates x weight decays) share
every feature batch and run as one batched computation (DINOv2's linear evaluation idea).

Parameters carry a leading head dimension; the optimiser applies each head's own learning rate
and weight decay, so the sweep trains exactly what H separate runs would, at the cost of one.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from featx.training.balance import balanced_class_weights
from featx.probes.batched import BatchedHeads, BatchedOptimizer
from featx.config import as_tuple, check_settings, check_types, old_names  # noqa: F401 (check_types: finetuning's)
from featx.errors import ConfigError, FeatxError
from featx.probes.settings import HEAD, METRICS, OPTIMIZERS, SCHEDULES, SELECTIONS  # noqa: F401
from featx.heads.kinds import FEATURE_KINDS, TORCH_KINDS, head_kind
from featx.training.lr_range import LRFindResult, range_test
from featx.evaluation.metrics import selection_scores
from featx.training.schedules import schedule_factor

# The default linear sweep: 8 learning rates x 4 weight decays = 32 heads.
SWEEP_LRS = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0)
SWEEP_WDS = (0.0, 1e-5, 1e-4, 1e-3)
# --epochs counts passes over up to this many training rows (budget_epochs); at least MIN_EPOCHS.
REFERENCE_ROWS, MIN_EPOCHS = 50_000, 2
VAL_CACHE_MB = 256  # val features normalised once and kept, below this size


HEAD_KINDS = FEATURE_KINDS  # torch heads, then scikit-learn baselines; tests/test_cli.py reads this name
# Defaults that differ by head: a 32-head SGD sweep for linear probes; for the MLP, the Caltech
# tutorial's single AdamW run (an MLP sweep multiplies its larger cost).
KIND_DEFAULTS = {"linear": {"optimizer": "sgd", "lrs": SWEEP_LRS, "weight_decays": SWEEP_WDS},
                 "mlp": {"optimizer": "adamw", "lrs": (1e-3,), "weight_decays": (1e-4,)}}


@old_names(views="use_views")  # `views` is ExtractConfig's count of augmented views
@dataclass(frozen=True)
class HeadConfig:
    """How to train a head. `optimizer`, `lrs` and `weight_decays` left as None take the
    defaults of `head` (KIND_DEFAULTS), so the API, `--kind mlp` and `compare` train alike."""

    head: str = "linear"  # linear | mlp | logreg | svm | knn
    hidden: tuple[int, ...] = (512,)  # MLP hidden sizes (Caltech tutorial: Linear-ReLU-Dropout-Linear)
    dropout: float = 0.4
    optimizer: str | None = None  # sgd | adam | adamw; None: the head's default
    lookahead: bool = False  # Lookahead(k=5, alpha=0.5) around the optimiser (flowers tutorial)
    lrs: tuple[float, ...] | None = None  # several = a sweep; None: the head's default
    weight_decays: tuple[float, ...] | None = None
    momentum: float = 0.9
    schedule: str = "cosine"
    step_size: int = 7  # StepLR, in epochs (the tutorials' step 7, gamma 0.1)
    gamma: float = 0.1
    epochs: int = 30
    batch_size: int = 256
    label_smoothing: float = 0.0
    balance: str = "none"  # none | weights (class-weighted loss) | sampler (balanced sampling)
    normalize: str = "standard"  # none | standard | l2
    use_views: bool = True  # sample one of clean + K stored views per image per epoch
    patience: int | None = None  # early stopping on val loss, best state restored
    features: str = "all"  # all | final (without the pooled block maps of extract --pool)
    select: str = "auto"  # auto | cv (k-fold on train+val, then refit) | val; auto: cv on small data
    folds: int = 5
    metric: str = "top1"  # what selects: top1 | balanced_accuracy | macro_f1
    seed: int = 0

    def __post_init__(self) -> None:
        head_kind(self.head, among=FEATURE_KINDS)
        defaulted = []
        for name, value in KIND_DEFAULTS.get(self.head, KIND_DEFAULTS["linear"]).items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
                defaulted.append(name)
        # Not a field (kept out of asdict and the sidecar): the fields that took the head's
        # defaults, so `for_kind` and `with_options` can take another head's.
        object.__setattr__(self, "defaulted", tuple(defaulted))
        for name in ("lrs", "weight_decays", "hidden"):
            object.__setattr__(self, name, as_tuple(getattr(self, name)))
        check_types(self, ints=("hidden", "step_size", "epochs", "batch_size", "patience", "folds", "seed"),
                    numbers=("dropout", "lrs", "weight_decays", "momentum", "gamma", "label_smoothing"))
        check_settings(self, HEAD)
        checks = [
            (bool(self.hidden), "hidden", "sizes >= 1"),
            (bool(self.lrs), "lrs", "positive learning rates"),
            (bool(self.weight_decays), "weight_decays", ">= 0"),
        ]
        for ok, name, rule in checks:
            if not ok:
                raise ConfigError(f"{name} must be {rule}, got {getattr(self, name)!r}")

    def for_kind(self, head: str) -> "HeadConfig":
        """The same settings for another head, with that head's defaults where none were given."""
        if head == self.head:
            return self
        return replace(self, head=head, **{name: None for name in self.defaulted})

    @property
    def torch_head(self) -> bool:
        return self.head in TORCH_KINDS

    @property
    def grid(self) -> list[tuple[float, float]]:
        return [(lr, wd) for lr in self.lrs for wd in self.weight_decays]


@dataclass
class SweepResult:
    heads: BatchedHeads  # with the selected state (best val loss per head when early stopping)
    grid: list[tuple[float, float]]
    val_top1: np.ndarray  # [H]
    val_loss: np.ndarray  # [H]
    best: int  # selected head
    epochs_run: int
    curve: list[dict] = field(default_factory=list)  # per epoch: train loss, val loss/top1 of best
    usable: np.ndarray | None = None  # [H] bool: False where the weights or val loss diverged


def head_losses(logits: torch.Tensor, y: torch.Tensor, class_weights: torch.Tensor | None,
                label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy of each head: logits [H, B, C] -> [H]."""
    h, b, c = logits.shape
    losses = F.cross_entropy(logits.reshape(h * b, c), y.repeat(h), weight=class_weights,
                             label_smoothing=label_smoothing, reduction="none").view(h, b)
    if class_weights is None:
        return losses.mean(1)
    return losses.sum(1) / class_weights[y].sum()


def train_heads(data, normalizer, config: HeadConfig, advance=lambda n: None) -> SweepResult:
    """Train the grid of heads on `data` (a FeatureData), select the best on val."""
    torch.manual_seed(config.seed)
    grid = config.grid
    hidden = config.hidden if config.head == "mlp" else ()
    heads = BatchedHeads(len(grid), data.dim, data.num_classes, hidden,
                         config.dropout if hidden else 0.0, config.seed)
    lrs = torch.tensor([lr for lr, _ in grid], dtype=torch.float32)
    wds = torch.tensor([wd for _, wd in grid], dtype=torch.float32)
    opt = BatchedOptimizer(heads, config.optimizer, lrs, wds, config.momentum, config.lookahead)
    counts = np.bincount(data.train_labels, minlength=data.num_classes).astype(np.float64)
    class_weights = sample_weights = None
    if config.balance == "weights" or (config.balance == "sampler" and data.streamed):
        w = balanced_class_weights(data.train_labels, data.num_classes)
        class_weights = torch.tensor(w, dtype=torch.float32)
    elif config.balance == "sampler":
        sample_weights = 1.0 / counts[data.train_labels]
    evaluate_val = _val_evaluator(data, normalizer, config.metric)
    epochs = budget_epochs(config.epochs, data.n_train)
    steps_per_epoch = math.ceil(data.n_train / config.batch_size)
    total = steps_per_epoch * epochs
    best_loss = torch.full((len(grid),), float("inf"))
    best_state = [p.detach().clone() for p in heads.parameters()]
    since_best = torch.zeros(len(grid), dtype=torch.long)
    val_top1 = val_loss = val_score = None
    curve, step, epochs_run, factor = [], 0, 0, 1.0
    for epoch in range(epochs):
        heads.train()
        train_loss, batches = torch.zeros(len(grid)), 0
        for x, y in data.epoch(epoch, config.batch_size, config.seed, sample_weights):
            factor = schedule_factor(config.schedule, step, total, epoch, config.step_size, config.gamma)
            logits = heads(torch.from_numpy(normalizer(x)))
            losses = head_losses(logits, torch.from_numpy(y), class_weights, config.label_smoothing)
            opt.zero_grad()
            losses.sum().backward()
            opt.step(factor)
            train_loss += losses.detach()
            batches += 1
            step += 1
        epochs_run = epoch + 1
        val_top1, val_loss, val_score = evaluate_val(heads)
        usable = heads.finite() & torch.isfinite(val_loss)
        improved = usable & (val_loss < best_loss)
        best_loss = torch.where(improved, val_loss, best_loss)
        since_best = torch.where(improved, 0, since_best + 1)
        if config.patience is not None:
            with torch.no_grad():
                for p, keep in zip(heads.parameters(), best_state):
                    keep[improved] = p[improved]
        leader = _select(val_score, val_loss, usable)
        curve.append({"epoch": epoch + 1, "lr_factor": factor,
                      "train_loss": float(train_loss[leader] / max(batches, 1)),
                      "val_loss": float(val_loss[leader]), "val_top1": float(val_top1[leader])})
        advance(1)
        if not usable.any():  # every head diverged: no later epoch brings a NaN back
            break
        if config.patience is not None and bool((since_best >= config.patience).all()):
            break
    if config.patience is not None:  # restore each head's best-val-loss state
        with torch.no_grad():
            for p, keep in zip(heads.parameters(), best_state):
                p.copy_(keep)
        val_top1, val_loss, val_score = evaluate_val(heads)
        # A head that never had a finite val loss holds its initial state: not a trained head.
        usable = heads.finite() & torch.isfinite(val_loss) & torch.isfinite(best_loss)
    if not usable.any():
        raise FeatxError(f"training diverged: the weights or val loss of every head became not finite "
                         f"(learning rates {', '.join(f'{lr:g}' for lr in config.lrs)}; weight decays "
                         f"{', '.join(f'{wd:g}' for wd in config.weight_decays)}); use a lower --lr")
    heads.eval()
    return SweepResult(heads, grid, val_top1.numpy(), val_loss.numpy(),
                       _select(val_score, val_loss, usable), epochs_run, curve, usable.numpy())


def budget_epochs(epochs: int, n_train: int) -> int:
    """Passes over the training rows: `epochs` up to REFERENCE_ROWS rows; beyond, the same number
    of samples in all (epochs x REFERENCE_ROWS), at least MIN_EPOCHS passes. A linear head has
    converged long before 30 passes over a million rows; the cost follows the work, not N x 30."""
    if n_train <= REFERENCE_ROWS:
        return epochs
    return max(min(epochs, MIN_EPOCHS), min(epochs, math.ceil(epochs * REFERENCE_ROWS / n_train)))


def _val_evaluator(data, normalizer, metric: str = "top1"):
    """heads -> (val top-1 [H], val loss [H], val `metric` [H]); val features cached unless the
    data streams or they would take more than VAL_CACHE_MB."""
    rows = getattr(data, "rows", None)  # a store's FeatureData; arrays in memory have no rows
    if data.streamed or (rows is not None and len(rows("val")) * data.dim * 4 / 2**20 > VAL_CACHE_MB):
        return lambda heads: evaluate_heads(heads, data.split_blocks("val"), normalizer, metric)
    x, y, _ = data.split_arrays("val")
    cached = [(normalizer(x), y, None)]
    return lambda heads: evaluate_heads(heads, cached, lambda v: v, metric)


@torch.no_grad()
def evaluate_heads(heads: BatchedHeads, blocks, normalizer, metric: str = "top1"):
    """(top-1 [H], mean cross-entropy [H], `metric` [H]) of every head over (x, y, _) blocks."""
    heads.eval()
    n_heads = len(heads.weights[0])
    loss_sum, preds, labels = torch.zeros(n_heads), [], []
    for x, y, _ in blocks:
        if len(y) == 0:
            continue
        logits = heads(torch.from_numpy(normalizer(x)))
        loss_sum += head_losses(logits, torch.from_numpy(y), None) * len(y)
        preds.append(logits.argmax(-1).numpy())
        labels.append(y)
    if not labels:
        return torch.zeros(n_heads), loss_sum, torch.zeros(n_heads)
    y, pred = np.concatenate(labels), np.concatenate(preds, 1)
    top1 = torch.from_numpy((pred == y).mean(1)).float()
    score = top1 if metric == "top1" else torch.from_numpy(
        selection_scores(pred, y, heads.weights[-1].shape[-1], metric)).float()
    return top1, loss_sum / len(y), score


def _select(score: torch.Tensor, loss: torch.Tensor, usable: torch.Tensor) -> int:
    """Best val score among the usable heads, ties broken by lower val loss (head 0 if none is)."""
    candidates = np.flatnonzero(usable.numpy())
    if not len(candidates):
        return 0
    order = np.lexsort((loss.numpy()[candidates], -score.numpy()[candidates]))
    return int(candidates[order[0]])


def lr_find(data, normalizer, config: HeadConfig, start: float = 1e-6, end: float = 10.0,
            steps: int = 100) -> LRFindResult:
    """LR range test (the flowers tutorial's finder) for one head of this config."""
    hidden = config.hidden if config.head == "mlp" else ()
    heads = BatchedHeads(1, data.dim, data.num_classes, hidden, config.dropout if hidden else 0.0,
                         config.seed)
    opt = BatchedOptimizer(heads, config.optimizer, torch.tensor([1.0]),
                           torch.tensor([config.weight_decays[0]]), config.momentum, config.lookahead)
    batches = _endless(data, config)
    heads.train()

    def step(lr: float) -> float:
        x, y = next(batches)
        loss = head_losses(heads(torch.from_numpy(normalizer(x))), torch.from_numpy(y), None,
                           config.label_smoothing)
        opt.zero_grad()
        loss.sum().backward()
        opt.step(lr)
        return float(loss[0].detach())

    return range_test(step, start, end, steps)


def _endless(data, config: HeadConfig):
    for epoch in itertools.count():
        yield from data.epoch(epoch, config.batch_size, config.seed)
