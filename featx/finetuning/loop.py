"""The training loop both fine-tunes share: optimiser, schedule, epochs, best epoch, checkpoints.

    opt = make_optimizer(job.net, config)
    schedule = Schedule(config, steps_per_epoch)
    run = fit(job, opt, schedule, config, out, "finetune resnet50", time.perf_counter())

`fit` first validates the warm start as epoch 0 (the best so far: a run no epoch beats ends with
the warm start's weights), then runs the epochs a previous run did not finish: each trains
(`job.train_epoch`), validates (`job.validate`), keeps the best epoch on val loss, and ends with
a checkpoint. Data order,
augmentation and dropout are seeded per epoch, so a resumed run ends with the same weights as an
uninterrupted one. `network_range_test` is the LR range test with the same optimiser and groups.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np
import torch

from featx.runtime import distributed
from featx.training.balance import balanced_class_weights
from featx.errors import FeatxError
from featx.finetuning.checkpoint import (best_path, load_best, load_checkpoint, remove_stale_files, save_best,
                                        save_checkpoint)
from featx.finetuning.config import FinetuneConfig
from featx.finetuning.model import Network, layer_groups, set_train_mode
from featx.training.lr_range import LRFindResult, range_test
from featx.runtime.progress import console, progress_bar
from featx.training.schedules import schedule_factor


def make_optimizer(net: Network, config: FinetuneConfig) -> torch.optim.Optimizer:
    """AdamW/SGD with discriminative rates: backbone groups bottom -> top at lr / lr_ratio ... lr,
    the head at lr. Each group keeps its rate as `base_lr`, which the schedule scales."""
    groups = layer_groups(net.backbone, config.groups)
    rates = [config.lr / config.lr_ratio ** ((config.groups - 1 - g) / max(config.groups - 1, 1))
             for g in range(config.groups)] if config.groups > 1 else [config.lr / config.lr_ratio]
    param_groups = [{"params": ps, "lr": lr, "base_lr": lr} for ps, lr in zip(groups, rates) if ps]
    param_groups.append({"params": list(net.head.parameters()), "lr": config.lr, "base_lr": config.lr})
    if config.optimizer == "adamw":
        return torch.optim.AdamW(param_groups, weight_decay=config.weight_decay)
    return torch.optim.SGD(param_groups, momentum=0.9, weight_decay=config.weight_decay)


@dataclass(frozen=True)
class Schedule:
    """Learning rates per optimiser step over the whole run (`config.schedule`, featx.training.schedules)."""
    config: FinetuneConfig
    steps_per_epoch: int

    def step(self, opt: torch.optim.Optimizer, step: int) -> None:
        """Optimiser step `step` of the run (0-based) at its scheduled rates; gradients cleared."""
        factor = schedule_factor(self.config.schedule, step, self.steps_per_epoch * self.config.epochs)
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * factor
        opt.step()
        opt.zero_grad(set_to_none=True)


def autocast(device: torch.device, config: FinetuneConfig):
    """Mixed precision on CUDA (`config.amp`); a no-op elsewhere."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp)
    return torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda" and dtype is not None)


def loss_weights(train_labels: np.ndarray, classes: int, config: FinetuneConfig,
                 device: torch.device) -> torch.Tensor | None:
    """Class weights of the loss (mean 1 over samples) when `config.balance` asks for them."""
    if config.balance != "weights":
        return None
    return torch.tensor(balanced_class_weights(train_labels, classes), dtype=torch.float32, device=device)


def loss_and_top1(probs: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(NLL, top-1) of predicted probabilities; (inf, 0) without samples (no val split)."""
    if not len(y):
        return float("inf"), 0.0
    nll = float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1)).mean())
    return nll, float((probs.argmax(1) == y).mean())


class Trainable(Protocol):
    """What `fit` trains: a network, one epoch of training, and its validation."""
    net: Network
    identity: dict  # what it trains from (checkpoint.run_identity): a checkpoint must match it

    def train_epoch(self, epoch: int, opt: torch.optim.Optimizer, schedule: Schedule) -> float:
        """Train epoch `epoch` (0-based); the mean training loss."""
        ...

    def validate(self) -> tuple[float, float]:
        """(val loss, val top-1); (inf, 0) without a val split."""
        ...


@dataclass
class Run:
    state: dict  # epoch, best_loss, best_epoch, since_best, curve, seconds (as checkpointed)
    resumed_from: int  # epochs already done when this process started
    start_time: float
    prior_seconds: float  # spent by earlier, interrupted runs of the same job

    def seconds(self) -> float:
        return self.prior_seconds + time.perf_counter() - self.start_time


def fit(job: Trainable, opt: torch.optim.Optimizer, schedule: Schedule, config: FinetuneConfig, out: Path,
        title: str, start_time: float, show_progress: bool = True, writer: bool = True) -> Run:
    """Resume, then per epoch: train, validate, keep the best, checkpoint, stop early. Ends with
    the best epoch's weights loaded into `job.net`. Only the `writer` process writes files."""
    net = job.net
    if writer:
        remove_stale_files(out)
    state = load_checkpoint(out, net, opt, config, job.identity)
    run = Run(state, state["epoch"], start_time, state.get("seconds", 0.0))
    if not state["curve"]:  # a fresh run: the warm start is epoch 0, the one to beat
        val_loss, val_top1 = job.validate()
        state["curve"].append({"epoch": 0, "train_loss": None, "val_loss": val_loss, "val_top1": val_top1})
        state.update(best_loss=val_loss, best_epoch=0, since_best=0)
        if writer:
            save_best(out, net)
    with progress_bar(config.epochs, title, unit="epoch", enabled=show_progress and writer) as advance:
        advance(run.resumed_from)
        for epoch in range(run.resumed_from, config.epochs):
            set_train_mode(net, epoch < config.head_epochs, config.train_bn)
            torch.manual_seed(config.seed * 100_003 + epoch)  # dropout masks: the same after a resume
            train_loss = job.train_epoch(epoch, opt, schedule)
            val_loss, val_top1 = job.validate()
            try:
                check_finite(net, epoch, train_loss, val_loss, config)  # before anything is saved
            except FeatxError:
                if writer and epoch == 0:  # only the warm start's copy was written: nothing to resume
                    best_path(out).unlink(missing_ok=True)
                raise
            state["curve"].append({"epoch": epoch + 1, "train_loss": train_loss,
                                   "val_loss": val_loss, "val_top1": val_top1})
            if val_loss < state["best_loss"] or math.isinf(val_loss):  # no val split: keep the last
                state.update(best_loss=val_loss, best_epoch=epoch + 1, since_best=0)
                if writer:
                    save_best(out, net)
            else:
                state["since_best"] += 1
            state.update(epoch=epoch + 1, seconds=run.seconds())
            if writer:
                save_checkpoint(out, net, opt, state, config, job.identity)
            distributed.barrier()  # the checkpoint is on disk before anyone goes on
            advance(1)
            if config.patience is not None and state["since_best"] >= config.patience:
                best = f"epoch {state['best_epoch']}" if state["best_epoch"] else "the warm start"
                console.print(f"early stop after epoch {epoch + 1}: val loss has not improved for "
                              f"{config.patience} epochs (best: {best})")
                break
    distributed.barrier()
    load_best(out, net)
    return run


def check_finite(net: Network, epoch: int, train_loss: float, val_loss: float, config: FinetuneConfig) -> None:
    """Stop the run when an epoch left weights or losses that are not finite (a rate far too
    high): the checkpoint of the epoch before stays, and nothing NaN is saved. Under torchrun
    the decision rests on the weights and the val loss, which every process shares."""
    weights = all(bool(torch.isfinite(p).all()) for p in net.parameters())
    losses = not math.isnan(val_loss) and (distributed.context().active or math.isfinite(train_loss))
    if weights and losses:
        return
    kept = f"the checkpoint after epoch {epoch} stays" if epoch else "nothing was saved"
    raise FeatxError(f"epoch {epoch + 1}: the {'losses' if weights else 'weights'} became not finite "
                     f"(training loss {train_loss:g}, val loss {val_loss:g} at lr {config.lr:g}); {kept}; "
                     "use a lower --lr")


def network_range_test(net: Network, config: FinetuneConfig, losses: Iterator[torch.Tensor], start: float,
                       end: float, steps: int, title: str, show_progress: bool = True) -> LRFindResult:
    """The LR range test on `net` with `config`'s optimiser, rate ratios, accumulation and BN mode;
    each next(losses) is one micro-batch's loss. `net` is left as it was."""
    saved = {k: v.detach().clone() for k, v in net.state_dict().items()}
    opt = make_optimizer(net, replace(config, lr=1.0))  # base_lr: each group's share of the top rate
    set_train_mode(net, head_only=False, train_bn=config.train_bn)
    torch.manual_seed(config.seed)

    def step(lr: float) -> float:
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * lr
        total = 0.0
        for _ in range(config.accumulate):
            loss = next(losses)
            (loss / config.accumulate).backward()
            total += float(loss.detach()) / config.accumulate
        opt.step()
        opt.zero_grad(set_to_none=True)
        return total

    try:
        return range_test(step, start, end, steps, "divergence", title, show_progress)
    finally:
        net.load_state_dict(saved)
