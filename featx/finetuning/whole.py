"""Fine-tune a whole network, warm-started from a head trained on cached features.

    result = finetune_network(open_dataset("elpv"), "heads/elpv_efficientnet_lite0_224px_clean.linear",
                      Path("runs/ft"), FinetuneConfig(epochs=8))

Linear-probe-then-fine-tune: the backbone and the trained head are rebuilt from the head's
sidecar, optionally only the head trains for `head_epochs`, then the whole network trains with
discriminative learning rates (layer groups from bottom to top get lr / lr_ratio ... lr, as
fastai's `slice`). Batch-norm statistics stay frozen by default: fine-tuning batches are small
(32 on a CPU) and their statistics are noisier than the pretrained ones.

Every epoch ends with a checkpoint; re-running the same command resumes after the last finished
epoch with the same weights an uninterrupted run would reach (featx.finetuning.loop). Under
torchrun each process takes its share of every global batch. The best epoch on val (loss) is
kept: saved as a backbone weights file that `featx extract --weights` accepts, and a featx head
on top of it that `featx predict` and `featx report` use like any other.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from featx.runtime import distributed
from featx.runtime.atomic import check_writable
from featx.backbones import create_backbone
from featx.backbones.weights import weights_arg
from featx.data import Dataset
from featx.runtime.device import resolve_device
from featx.errors import ConfigError, FeatxError
from featx.finetuning.checkpoint import (finetune_calibration, run_identity, save_backbone, save_finetuned_head,
                                         val_temperature)
from featx.finetuning.config import FinetuneConfig, FinetuneResult
from featx.finetuning.data import (ImageSamples, cpu_share, epoch_batches, image_loader, loader_workers,
                                   views_on_device)
from featx.finetuning.loop import (Schedule, autocast, fit, loss_and_top1, loss_weights, make_optimizer,
                                 network_range_test)
from featx.finetuning.model import HeadModule, Network, head_columns
from featx.heads.io import Head
from featx.training.lr_range import LRFindResult
from featx.evaluation.calibration import softmax_at
from featx.evaluation.metrics import Metrics, evaluate
from featx.data.transforms import load_recipe, normalize


def finetune_network(dataset: Dataset, head_path: str | Path, out: str | Path,
             config: FinetuneConfig = FinetuneConfig(), show_progress: bool = True) -> FinetuneResult:
    """Fine-tune backbone + head on `dataset`; `out` is the path stem of everything written."""
    start_time, out = time.perf_counter(), Path(out)
    check_writable(out.parent)  # before the network is built and the first epoch trained
    job = WholeNetwork.build(dataset, head_path, config)
    writer = job.ctx.rank == 0  # one process writes checkpoints and results
    opt = make_optimizer(job.net, config)
    schedule = Schedule(config, steps_per_epoch=math.ceil(len(job.loaders["train"]) / config.accumulate))
    with cpu_share(job.device, loader_workers(config)):
        run = fit(job, opt, schedule, config, out, f"finetune {job.backbone_name}", start_time,
                  show_progress, writer)
        val_scored, test_scored = job.predict_logits("val"), job.predict_logits("test")
    # No epoch beat the warm start: the network is the warm start, its temperature already in
    # its last layer (fitted on held-out predictions when it was trained); it is returned as given.
    kept = run.state["best_epoch"] == 0
    temperature = None if kept else val_temperature(*val_scored)
    t = temperature.value if temperature else 1.0
    val, test = job.metrics("val", t, val_scored), job.metrics("test", t, test_scored)
    before = job.metrics("test", 1.0, test_scored) if temperature else None  # the test split as tuned
    calibration = finetune_calibration(temperature, before, test, job.head.meta.temperature if kept else None)
    seconds, state = run.seconds(), run.state
    weights_file = out.with_name(out.name + ".backbone.safetensors")
    head_file = out.with_name(out.name + ".head.safetensors")
    if writer:
        save_backbone(weights_file, job.model)
        save_finetuned_head(out, job.net, job.head, weights_file, config, state, val, test, seconds,
                            dataset.root, job.train_labels, job.identity["aug"], temperature, calibration)
    distributed.barrier()
    return FinetuneResult(head_file, weights_file, val, test, seconds, state["epoch"],
                          state["best_epoch"], run.resumed_from, state["curve"])


def find_lr(dataset: Dataset, head_path: str | Path, config: FinetuneConfig = FinetuneConfig(),
            start: float = 1e-6, end: float = 1.0, steps: int = 120,
            show_progress: bool = True) -> LRFindResult:
    """LR range test through backbone + head, warm-started from the head as `finetune` would be:
    the top rate sweeps start -> end with the lower groups at their `lr_ratio` shares. The
    suggestion is a `lr` for `finetune` with the same settings."""
    if distributed.context().active:
        raise ConfigError("the learning-rate finder runs in one process: run the same command with "
                          "--lr-find without torchrun first (--lr auto then reuses its rate), or give --lr")
    job = WholeNetwork.build(dataset, head_path, config)

    def losses():
        loader = job.loaders["train"]
        for epoch in itertools.count():
            for batch, global_size in epoch_batches(loader, epoch):
                yield job.batch_loss(job.net, batch, global_size)

    with cpu_share(job.device, loader_workers(config)):
        return network_range_test(job.net, config, losses(), start, end, steps,
                                  f"lr-find {job.backbone_name}", show_progress)


@dataclass
class WholeNetwork:
    """Everything a whole-network fine-tune (or its LR range test) trains with."""
    net: Network
    model: torch.nn.Module  # the backbone alone (net.backbone may add pooled block maps to it)
    head: Head
    backbone_name: str
    loaders: dict[str, torch.utils.data.DataLoader]  # train, val, test
    train_labels: np.ndarray
    class_weights: torch.Tensor | None
    device: torch.device
    ctx: distributed.DistContext
    config: FinetuneConfig
    identity: dict  # the warm-start head and the data, as a checkpoint records them

    @classmethod
    def build(cls, dataset: Dataset, head_path: str | Path, config: FinetuneConfig) -> WholeNetwork:
        """The head's backbone with the head on top, on this process's device, and the loaders."""
        head = Head.load(head_path)
        check_head_fits(head, dataset)
        ctx = distributed.context()
        device = resolve_device(config.device)
        if ctx.active:
            if config.batch_size % ctx.world_size:
                raise ConfigError(f"batch size {config.batch_size} (the global batch) must be a multiple "
                                  f"of the {ctx.world_size} processes")
            if device.type == "cuda" and device.index is None:
                device = torch.device("cuda", ctx.local_rank)
                torch.cuda.set_device(device)
            distributed.init(ctx, device)
        torch.manual_seed(config.seed)
        backbone = create_backbone(head.meta["backbone"], weights_arg(head.meta["weights"]),
                                   head.meta.get("backbone_seed", 0),
                                   head.meta["preprocess"]["input_size"])
        backbone.preprocess = backbone.preprocess.following(head.meta["preprocess"])  # the head's resize
        net = Network(head_columns(backbone.model, head), HeadModule(head)).to(device)
        if device.type == "cuda":
            net = net.to(memory_format=torch.channels_last)
        recipe = load_recipe(config.aug) if config.aug != "none" else None
        loaders = {split: image_loader(dataset, split, backbone.preprocess,
                                       recipe if split == "train" else None, config, device, ctx)
                   for split in ("train", "val", "test")}
        if not len(loaders["train"].dataset):
            raise FeatxError(f"{dataset.root}: no labelled training images to fine-tune on")
        train_labels = np.array([s.label for s in dataset.samples if s.split == "train"])
        identity = run_identity(head, dataset.root, dataset.fingerprint)
        identity["aug"] = recipe.to_dict() if recipe else None  # the ops, not only the recipe's name
        return cls(net, backbone.model, head, backbone.name, loaders, train_labels,
                   loss_weights(train_labels, len(head.classes), config, device), device, ctx, config, identity)

    def train_epoch(self, epoch: int, opt: torch.optim.Optimizer, schedule: Schedule) -> float:
        """One epoch of micro-batches; an optimiser step every `accumulate` of them."""
        config, loader, model = self.config, self.loaders["train"], self.net
        if self.ctx.active:  # wrapped per epoch: head-only epochs train fewer parameters
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            model = DistributedDataParallel(self.net, device_ids=ids, broadcast_buffers=False)
        losses, step = [], epoch * schedule.steps_per_epoch
        opt.zero_grad(set_to_none=True)
        for i, (batch, global_size) in enumerate(epoch_batches(loader, epoch)):
            last_micro = (i + 1) % config.accumulate == 0 or i + 1 == len(loader)
            # Gradients are averaged across processes only on the micro-batch that steps.
            with (model.no_sync() if self.ctx.active and not last_micro else contextlib.nullcontext()):
                loss = self.batch_loss(model, batch, global_size)
                (loss / config.accumulate).backward()
            losses.append(float(loss.detach()))
            if last_micro:
                schedule.step(opt, step)
                step += 1
        return float(np.mean(losses)) if losses else float("nan")

    def batch_loss(self, model: torch.nn.Module, batch, global_size: int) -> torch.Tensor:
        """This rank's part of the global batch's mean loss, scaled so that DDP's gradient average
        (a mean over ranks) equals the single-process gradient of the same global batch."""
        data: ImageSamples = self.loaders["train"].dataset
        batch = views_on_device(batch, data, self.device)
        if batch is None:  # every image of this share failed to decode: a zero loss keeps ranks in step
            return sum(p.sum() * 0 for p in model.parameters() if p.requires_grad)
        x, y = batch  # (B, 3, H, W) uint8, (B,)
        x = normalize(x, data.pre)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        try:
            with autocast(self.device, self.config):
                logits = model(x)  # (B, classes)
        except torch.OutOfMemoryError:
            raise FeatxError(f"CUDA out of memory at batch size {len(x)} per process: use a smaller "
                             "--batch-size with --accumulate N to keep the effective batch") from None
        per_item = F.cross_entropy(logits.float(), y.to(self.device), weight=self.class_weights,
                                   label_smoothing=self.config.label_smoothing, reduction="none")
        return per_item.sum() * self.ctx.world_size / global_size

    def predict(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(class probabilities (N, classes), labels (N,)) of a split's clean views."""
        logits, labels = self.predict_logits(split)
        return (softmax_at(logits) if len(labels) else logits), labels

    @torch.no_grad()
    def predict_logits(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(logits (N, classes), labels (N,)) of a split's clean views."""
        self.net.eval()
        loader = self.loaders[split]
        parts, labels = [], []
        for batch in loader:
            batch = views_on_device(batch, loader.dataset, self.device)
            if batch is None:
                continue
            x, y = batch
            with autocast(self.device, self.config):
                logits = self.net(normalize(x, loader.dataset.pre))
            parts.append(logits.float().cpu().numpy())
            labels.append(y.cpu().numpy())
        if not parts:
            return np.zeros((0, 0)), np.zeros(0, np.int64)
        return np.concatenate(parts), np.concatenate(labels)

    def validate(self) -> tuple[float, float]:
        return loss_and_top1(*self.predict("val"))

    def metrics(self, split: str, temperature: float = 1.0,
                scored: tuple[np.ndarray, np.ndarray] | None = None) -> Metrics | None:
        """A split's metrics at `temperature`, from its (logits, labels) where already predicted."""
        logits, y = scored if scored is not None else self.predict_logits(split)
        if not len(y):
            return None
        paths = [s.path for s in self.loaders[split].dataset.samples]
        return evaluate(y, softmax_at(logits, temperature), self.head.class_names,
                        paths if len(paths) == len(y) else None)


def check_head_fits(head: Head, dataset: Dataset) -> None:
    if list(head.classes) != list(dataset.classes):
        raise FeatxError(f"{head.path}: the head's classes {head.classes[:6]} do not match the data's "
                         f"{dataset.classes[:6]}; train a head on a store of this data first")
