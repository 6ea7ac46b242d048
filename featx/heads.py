"""Torch heads trained many at once: H heads (a grid of learning rates x weight decays) share
every feature batch and run as one batched computation (DINOv2's linear evaluation idea).

Parameters carry a leading head dimension; the optimiser applies each head's own learning rate
and weight decay, so the sweep trains exactly what H separate runs would, at the cost of one.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from featx.balance import balanced_class_weights
from featx.errors import ConfigError, FeatxError
from featx.lr_range import LRFindResult, range_test
from featx.metrics import selection_scores
from featx.schedules import schedule_factor

# The default linear sweep: 8 learning rates x 4 weight decays = 32 heads.
SWEEP_LRS = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0)
SWEEP_WDS = (0.0, 1e-5, 1e-4, 1e-3)
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "step", "cosine", "onecycle")
SELECTIONS = ("auto", "cv", "val")
METRICS = ("top1", "balanced_accuracy", "macro_f1")


HEAD_KINDS = ("linear", "mlp", "logreg", "svm", "knn")  # torch heads, then scikit-learn baselines
# Defaults that differ by head: a 32-head SGD sweep for linear probes; for the MLP, the Caltech
# tutorial's single AdamW run (an MLP sweep multiplies its larger cost).
KIND_DEFAULTS = {"linear": {"optimizer": "sgd", "lrs": SWEEP_LRS, "weight_decays": SWEEP_WDS},
                 "mlp": {"optimizer": "adamw", "lrs": (1e-3,), "weight_decays": (1e-4,)}}


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
    views: bool = True  # sample one of clean + K stored views per image per epoch
    patience: int | None = None  # early stopping on val loss, best state restored
    features: str = "all"  # all | final (without the pooled block maps of extract --pool)
    select: str = "auto"  # auto | cv (k-fold on train+val, then refit) | val; auto: cv on small data
    folds: int = 5
    metric: str = "top1"  # what selects: top1 | balanced_accuracy | macro_f1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.head not in HEAD_KINDS:
            raise ConfigError(f"unknown head {self.head!r} (use {' | '.join(HEAD_KINDS)})")
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
        checks = [
            (self.optimizer in OPTIMIZERS, "optimizer", " | ".join(OPTIMIZERS)),
            (self.schedule in SCHEDULES, "schedule", " | ".join(SCHEDULES)),
            (self.balance in ("none", "weights", "sampler"), "balance", "none | weights | sampler"),
            (self.normalize in ("none", "standard", "l2"), "normalize", "none | standard | l2"),
            (self.features in ("all", "final"), "features", "all | final"),
            (self.select in SELECTIONS, "select", " | ".join(SELECTIONS)),
            (self.metric in METRICS, "metric", " | ".join(METRICS)),
            (self.folds >= 2, "folds", ">= 2"),
            (self.epochs >= 1, "epochs", ">= 1"), (self.batch_size >= 1, "batch_size", ">= 1"),
            (bool(self.hidden) and min(self.hidden) >= 1, "hidden", "sizes >= 1"),
            (self.patience is None or self.patience >= 1, "patience", ">= 1"),
            (self.step_size >= 1, "step_size", ">= 1"),
            (bool(self.lrs) and min(self.lrs) > 0, "lrs", "positive learning rates"),
            (bool(self.weight_decays) and min(self.weight_decays) >= 0, "weight_decays", ">= 0"),
            (self.momentum >= 0, "momentum", ">= 0"),
            (0 <= self.dropout < 1, "dropout", "in [0, 1)"),
            (0 <= self.label_smoothing < 1, "label_smoothing", "in [0, 1)"),
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
        return self.head in ("linear", "mlp")

    @property
    def grid(self) -> list[tuple[float, float]]:
        return [(lr, wd) for lr in self.lrs for wd in self.weight_decays]


def as_tuple(value) -> tuple:
    """One value or a sequence of them, as a tuple (a string is one value, not its letters)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        return (value,)
    return tuple(value)


def check_types(config, ints: tuple[str, ...] = (), numbers: tuple[str, ...] = ()) -> None:
    """Config values of the right type, from the API and config files alike: `ints` hold
    integers (not a bool, not 2.7), `numbers` finite numbers; a tuple is checked item by item,
    None passes (an option left unset). Raises ConfigError naming the field."""
    for names, ok, rules in ((ints, _is_int, ("an integer", "integers")),
                             (numbers, _is_finite, ("a finite number", "finite numbers"))):
        for name in names:
            value = getattr(config, name)
            if value is not None and not all(ok(v) for v in as_tuple(value)):
                raise ConfigError(f"{name} must be {rules[isinstance(value, tuple)]}, got {value!r}")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_finite(value) -> bool:
    return (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
            and math.isfinite(value))


class BatchedHeads(torch.nn.Module):
    """H independent heads (linear or MLP) evaluated together: x [B, D] -> logits [H, B, C]."""

    def __init__(self, num_heads: int, dim: int, num_classes: int, hidden: tuple[int, ...] = (),
                 dropout: float = 0.0, seed: int = 0):
        super().__init__()
        # Every head starts from the same init, so head h of a sweep trains exactly what a
        # single run with its learning rate and weight decay would.
        gen = torch.Generator().manual_seed(seed)
        sizes = [dim, *hidden, num_classes]
        self.weights = torch.nn.ParameterList()
        self.biases = torch.nn.ParameterList()
        for d_in, d_out in zip(sizes[:-1], sizes[1:]):
            if not hidden:  # linear probe: small normal init (DINOv2), zero bias
                w = torch.randn(1, d_in, d_out, generator=gen) * 0.01
            else:  # nn.Linear's default init
                bound = 1 / math.sqrt(d_in)
                w = (torch.rand(1, d_in, d_out, generator=gen) * 2 - 1) * bound
            w = w.repeat(num_heads, 1, 1)
            self.weights.append(torch.nn.Parameter(w))
            self.biases.append(torch.nn.Parameter(torch.zeros(num_heads, d_out)))
        self.dropout = dropout
        self.gen = torch.Generator().manual_seed(seed + 1)  # dropout masks, seeded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.unsqueeze(0).expand(len(self.weights[0]), -1, -1)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b.unsqueeze(1), h, w)
            if i < last:
                h = F.relu(h)
                if self.training and self.dropout:
                    keep = torch.rand(h.shape, generator=self.gen) >= self.dropout
                    h = h * keep / (1 - self.dropout)
        return h

    def finite(self) -> torch.Tensor:
        """[H] bool: the heads whose parameters are all finite numbers (a too high rate makes
        them inf or NaN)."""
        ok = torch.ones(len(self.weights[0]), dtype=torch.bool)
        for p in self.parameters():
            ok &= torch.isfinite(p.detach()).flatten(1).all(1)
        return ok

    def select(self, index: int) -> dict[str, torch.Tensor]:
        """One head's parameters: layers.{i}.weight [d_in, d_out], layers.{i}.bias [d_out]."""
        out = {}
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            out[f"layers.{i}.weight"] = w[index].detach().clone().contiguous()
            out[f"layers.{i}.bias"] = b[index].detach().clone().contiguous()
        return out


class BatchedOptimizer:
    """SGD (momentum) / Adam / AdamW with a learning rate and weight decay per head.

    Weight decay applies to weights, not biases. Adam's decay is L2 (added to the gradient),
    AdamW's is decoupled, as in torch.optim.
    """

    def __init__(self, heads: BatchedHeads, kind: str, lrs: torch.Tensor, wds: torch.Tensor,
                 momentum: float = 0.9, lookahead: bool = False, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = [(p, True) for p in heads.weights] + [(p, False) for p in heads.biases]
        self.kind, self.lrs, self.wds, self.momentum = kind, lrs, wds, momentum
        self.betas, self.eps, self.steps = betas, eps, 0
        self.state = [{"m": torch.zeros_like(p), "v": torch.zeros_like(p)} for p, _ in self.params]
        self.slow = [p.detach().clone() for p, _ in self.params] if lookahead else None

    @torch.no_grad()
    def step(self, factor: float = 1.0) -> None:
        self.steps += 1
        b1, b2 = self.betas
        for (p, decays), state in zip(self.params, self.state):
            shape = (-1,) + (1,) * (p.dim() - 1)
            lr = (self.lrs * factor).view(shape)
            wd = self.wds.view(shape) if decays else torch.zeros_like(self.wds).view(shape)
            g = p.grad
            if self.kind == "sgd":
                g = g + wd * p
                state["m"].mul_(self.momentum).add_(g)
                p.sub_(lr * state["m"])
                continue
            if self.kind == "adamw":
                p.mul_(1 - lr * wd)
            else:
                g = g + wd * p
            state["m"].mul_(b1).add_(g, alpha=1 - b1)
            state["v"].mul_(b2).addcmul_(g, g, value=1 - b2)
            m_hat = state["m"] / (1 - b1 ** self.steps)
            v_hat = state["v"] / (1 - b2 ** self.steps)
            p.sub_(lr * m_hat / (v_hat.sqrt() + self.eps))
        if self.slow is not None and self.steps % 5 == 0:  # Lookahead: k=5, alpha=0.5
            for (p, _), slow in zip(self.params, self.slow):
                slow.add_(p.detach() - slow, alpha=0.5)
                p.copy_(slow)

    def zero_grad(self) -> None:
        for p, _ in self.params:
            p.grad = None


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
    steps_per_epoch = math.ceil(data.n_train / config.batch_size)
    total = steps_per_epoch * config.epochs
    best_loss = torch.full((len(grid),), float("inf"))
    best_state = [p.detach().clone() for p in heads.parameters()]
    since_best = torch.zeros(len(grid), dtype=torch.long)
    val_top1 = val_loss = val_score = None
    curve, step, epochs_run, factor = [], 0, 0, 1.0
    for epoch in range(config.epochs):
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


def _val_evaluator(data, normalizer, metric: str = "top1"):
    """heads -> (val top-1 [H], val loss [H], val `metric` [H]); val features cached unless the
    data streams."""
    if data.streamed:
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
