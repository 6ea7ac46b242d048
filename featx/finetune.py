"""Fine-tune a whole network, warm-started from a head trained on cached features.

    result = finetune(open_dataset("elpv"), "heads/elpv_efficientnet_lite0_224px_clean.linear",
                      Path("runs/ft"), FinetuneConfig(epochs=8))

Linear-probe-then-fine-tune: the backbone and the trained head are rebuilt from the head's
sidecar, optionally only the head trains for `head_epochs`, then the whole network trains with
discriminative learning rates (layer groups from bottom to top get lr / lr_ratio ... lr, as
fastai's `slice`). Batch-norm statistics stay frozen by default: fine-tuning batches are small
(32 on a CPU) and their statistics are noisier than the pretrained ones.

Every epoch ends with a checkpoint (model and optimiser tensors as safetensors, the rest as JSON;
no pickle). Re-running the same command resumes after the last finished epoch; data order,
augmentation and dropout are seeded per epoch, so a resumed run ends with the same weights as an
uninterrupted one. The best epoch on val (loss) is kept: saved as a backbone weights file that
`featx extract --weights` accepts, and a featx head on top of it that `featx predict` and
`featx report` use like any other.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from featx import distributed
from featx.backbones import create_backbone
from featx.backbones.weights import sha256_file, weights_arg
from featx.data import Dataset
from featx.errors import ConfigError, FeatxError
from featx.extract import JPEG_SUFFIXES, resolve_device, use_device_decode
from featx.feature_data import scale_constant_features
from featx.head_io import Head, save_head
from featx.images import decode_jpegs, image_to_tensor, load_image, read_file_bytes
from featx.lr_range import LRFindResult, range_test
from featx.metrics import Metrics, evaluate
from featx.progress import console, progress_bar
from featx.transforms import augmented_views, clean_view, clean_views, load_recipe, normalize

CHECKPOINT_FORMAT = "featx-finetune-checkpoint/1"
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
    schedule: str = "onecycle"  # onecycle (warm-up then cosine) | cosine
    label_smoothing: float = 0.1
    balance: str = "none"  # none | weights
    train_bn: bool = False
    aug: str = "flips"  # recipe applied on the fly (configs/aug/); flips suit orientation-free images
    # Off by default: one-cycle anneals in the last epochs, where the best val epoch usually is.
    patience: int | None = None  # early stopping on val loss (the best epoch is kept either way)
    seed: int = 0
    device: str = "auto"
    amp: str = "bf16"  # CUDA only
    decode: str = "auto"  # auto | cpu | gpu: JPEG files decoded by nvjpeg on CUDA (auto = gpu on CUDA)
    workers: int | None = None
    from_block: str | None = None  # train only the blocks above this cut, on a store's cached maps
    map_aug: str = "rot90-flip"  # with from_block: symmetries of the cached maps (rot90-flip | flip | none)

    def __post_init__(self) -> None:
        for name, value in MODE_DEFAULTS["top" if self.from_block else "whole"].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        checks = [
            (self.epochs >= 1, "epochs", ">= 1"), (self.batch_size >= 1, "batch_size", ">= 1"),
            (self.accumulate >= 1, "accumulate", ">= 1"), (self.lr > 0, "lr", "> 0"),
            (self.lr_ratio >= 1, "lr_ratio", ">= 1"), (self.groups >= 1, "groups", ">= 1"),
            (self.optimizer in ("adamw", "sgd"), "optimizer", "adamw or sgd"),
            (self.schedule in ("onecycle", "cosine"), "schedule", "onecycle or cosine"),
            (self.balance in ("none", "weights"), "balance", "none or weights"),
            (0 <= self.head_epochs < self.epochs, "head_epochs", "in [0, epochs)"),
            (self.map_aug in ("rot90-flip", "flip", "none"), "map_aug", "rot90-flip, flip or none"),
            (self.decode in ("auto", "cpu", "gpu"), "decode", "auto, cpu or gpu"),
        ]
        for ok, name, rule in checks:
            if not ok:
                raise ConfigError(f"{name} must be {rule}, got {getattr(self, name)!r}")


@dataclass
class FinetuneResult:
    head: Path  # the featx head (its sidecar names the fine-tuned backbone weights)
    weights: Path  # backbone weights: `featx extract --weights` takes this file
    val: Metrics | None
    test: Metrics | None
    seconds: float
    epochs_run: int
    best_epoch: int
    resumed_from: int = 0  # epochs already done when this run started
    curve: list[dict] = field(default_factory=list)


class HeadModule(torch.nn.Module):
    """A saved linear/MLP head (with its feature standardisation) as trainable torch layers."""

    def __init__(self, head: Head):
        super().__init__()
        if head.kind == "knn":
            raise FeatxError(f"{head.path}: a k-NN head has no weights to fine-tune from; "
                             "train a linear head (featx train-head --head linear)")
        norm = head.normalizer()
        dim = int(head.meta["feature_dim"])
        mean = norm.mean if norm.mode == "standard" else np.zeros(dim, np.float32)
        std = norm.std if norm.mode == "standard" else np.ones(dim, np.float32)
        mean, std = np.asarray(mean, np.float32), np.array(std, np.float32)
        # Heads from before train-head scaled constant features (scale_constant_features) have a
        # std of 1e-6 on them and a weight no data ever tested: once fine-tuning moves such a
        # feature a little, (x - mean) / std explodes (ELPV lite0: one weight of 12, train loss 23
        # in epoch 1). They start from a zero weight and a typical std; on the training set
        # nothing changes.
        scaled = scale_constant_features(std).astype(np.float32)
        constant, std = scaled != std, scaled
        self.register_buffer("mean", torch.from_numpy(mean))
        self.register_buffer("std", torch.from_numpy(std))
        self.l2 = norm.mode == "l2"
        n = sum(1 for k in head.tensors if k.startswith("layers.") and k.endswith(".weight"))
        self.layers = torch.nn.ModuleList()
        for i in range(n):
            w, b = head.tensors[f"layers.{i}.weight"].copy(), head.tensors[f"layers.{i}.bias"]
            if i == 0 and not self.l2:
                w[constant] = 0.0
            layer = torch.nn.Linear(w.shape[0], w.shape[1])
            with torch.no_grad():
                layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T)))
                layer.bias.copy_(torch.from_numpy(b))
            self.layers.append(layer)
        dropout = head.meta.get("config", {}).get("dropout", 0.0) if n > 1 else 0.0
        self.dropout = torch.nn.Dropout(dropout)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = F.normalize(features, dim=1) if self.l2 else (features - self.mean) / self.std
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = self.dropout(F.relu(x))
        return x

    def tensors(self) -> dict[str, np.ndarray]:
        """In featx head layout: layers.{i}.weight [d_in, d_out], norm.mean/std."""
        out = {f"layers.{i}.weight": l.weight.detach().cpu().T.contiguous().numpy()
               for i, l in enumerate(self.layers)}
        out.update({f"layers.{i}.bias": l.bias.detach().cpu().numpy() for i, l in enumerate(self.layers)})
        if not self.l2:
            out.update({"norm.mean": self.mean.cpu().numpy(), "norm.std": self.std.cpu().numpy()})
        return out


class Network(torch.nn.Module):
    def __init__(self, backbone: torch.nn.Module, head: HeadModule):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class ImageSamples(torch.utils.data.Dataset):
    """(uint8 view, label) of one split; training views augmented, seeded by (seed, path, epoch).

    With `device_decode` (CUDA), JPEG files come back undecoded (`JpegBytes`): the main process
    decodes them on the GPU (nvjpeg) and makes the same views there (`views_on_device`).
    """

    def __init__(self, dataset: Dataset, split: str, pre, recipe, seed: int, device_decode: bool = False):
        self.samples = [s for s in dataset.samples if s.split == split and s.label >= 0]
        self.root, self.pre, self.recipe, self.seed = dataset.root, pre, recipe, seed
        self.device_decode = device_decode
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        sample = self.samples[i]
        path = self.root / sample.path
        try:
            if self.device_decode and path.suffix.lower() in JPEG_SUFFIXES:
                return JpegBytes(read_file_bytes(path), i), sample.label
            return self.view(image_to_tensor(load_image(path)), i), sample.label
        except (FeatxError, OSError):
            return None  # skipped by the collate function, reported once by the scan

    def view(self, img: torch.Tensor, i: int) -> torch.Tensor:
        """Sample i's view this epoch (clean for val/test), on the image's device."""
        if self.recipe is None:
            return clean_view(img, self.pre)
        (view,) = augmented_views(img, self.pre, self.recipe, self.seed,
                                  f"finetune:{self.samples[i].path}", [self.epoch + 1])
        return view


@dataclass
class JpegBytes:
    data: torch.Tensor  # the file's bytes
    index: int  # sample index in its ImageSamples


def _collate(items):
    """(decoded views, labels, undecoded JPEGs with their positions), in the batch's order."""
    items = [it for it in items if it is not None]
    if not items:
        return None
    decoded = [x for x, _ in items if not isinstance(x, JpegBytes)]
    jpegs = [(pos, x) for pos, (x, _) in enumerate(items) if isinstance(x, JpegBytes)]
    x = torch.stack(decoded) if decoded else torch.zeros(0, dtype=torch.uint8)
    return x, torch.tensor([y for _, y in items]), jpegs


def views_on_device(batch, data: ImageSamples, device: torch.device):
    """A collated batch as (uint8 views, labels) on `device`, in the batch's order: JPEGs decoded
    and viewed there, those that fail to decode left out. None when no image is left."""
    if batch is None:
        return None
    x, y, jpegs = batch
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    if not jpegs:
        return x, y
    decoded = decode_jpegs([j.data for _, j in jpegs],
                           [data.root / data.samples[j.index].path for _, j in jpegs], device)
    ok = [(pos, j, img) for (pos, j), img in zip(jpegs, decoded) if not isinstance(img, str)]
    if data.recipe is None:  # one resize call per image size, not per image
        views = clean_views([img for _, _, img in ok], data.pre)
    else:
        views = [data.view(img, j.index) for _, j, img in ok]
    by_position = dict(zip([pos for pos, _, _ in ok], views))
    rest = iter(x)
    jpeg_positions = {pos for pos, _ in jpegs}
    order = [pos for pos in range(len(y)) if pos not in jpeg_positions or pos in by_position]
    if not order:
        return None
    images = [by_position[pos] if pos in jpeg_positions else next(rest) for pos in order]
    return torch.stack(images), y[torch.tensor(order, device=device)]


def layer_groups(backbone: torch.nn.Module, groups: int) -> list[list[torch.nn.Parameter]]:
    """Backbone parameters split bottom -> top into `groups` runs of (about) equal size."""
    params = [p for p in backbone.parameters()]
    sizes = np.cumsum([p.numel() for p in params])
    bounds = sizes[-1] * np.arange(1, groups) / groups if len(params) else []
    which = np.searchsorted(bounds, sizes, side="left")
    return [[p for p, w in zip(params, which) if w == g] for g in range(groups)]


def lr_factor(kind: str, step: int, total: int, warmup: float = 0.1) -> float:
    t = step / max(total, 1)
    if kind == "onecycle" and t < warmup:
        return 0.04 + 0.96 * t / warmup
    if kind == "onecycle":
        t = (t - warmup) / (1 - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


@dataclass
class _WholeNetwork:
    """Everything a whole-network fine-tune (or its LR range test) trains with."""
    net: Network
    head: Head
    backbone_name: str
    loaders: dict[str, torch.utils.data.DataLoader]
    train_labels: np.ndarray
    class_weights: torch.Tensor | None
    device: torch.device
    ctx: distributed.DistContext


def _whole_network(dataset: Dataset, head_path: str | Path, config: FinetuneConfig) -> _WholeNetwork:
    head = Head.load(head_path)
    _check_head_fits(head, dataset)
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
    net = Network(backbone.model, HeadModule(head)).to(device)
    if device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    recipe = load_recipe(config.aug) if config.aug != "none" else None
    loaders = {split: _loader(dataset, split, backbone.preprocess, recipe if split == "train" else None,
                              config, device, ctx) for split in ("train", "val", "test")}
    if not len(loaders["train"].dataset):
        raise FeatxError(f"{dataset.root}: no labelled training images to fine-tune on")
    train_labels = np.array([s.label for s in dataset.samples if s.split == "train"])
    return _WholeNetwork(net, head, backbone.name, loaders, train_labels,
                         class_weights(train_labels, len(head.classes), config, device), device, ctx)


def finetune(dataset: Dataset, head_path: str | Path, out: str | Path,
             config: FinetuneConfig = FinetuneConfig(), show_progress: bool = True) -> FinetuneResult:
    """Fine-tune backbone + head on `dataset`; `out` is the path stem of everything written."""
    start_time = time.perf_counter()
    out = Path(out)
    job = _whole_network(dataset, head_path, config)
    net, loaders, device = job.net, job.loaders, job.device
    writer = job.ctx.rank == 0  # one process writes checkpoints and results
    opt = make_optimizer(net, config)
    schedule = Schedule(config, steps_per_epoch=math.ceil(len(loaders["train"]) / config.accumulate))
    run = fit(net, opt, config, out, f"finetune {job.backbone_name}", start_time,
              train_epoch=lambda epoch: _train_epoch(net, loaders["train"], opt, config, epoch, schedule,
                                                     job.class_weights, device, job.ctx),
              validate=lambda: _val(net, loaders["val"], device, config),
              show_progress=show_progress, writer=writer)
    val = _metrics(net, loaders["val"], job.head, device, config)
    test = _metrics(net, loaders["test"], job.head, device, config)
    seconds = run.seconds()
    state = run.state
    weights_file = out.with_name(out.name + ".backbone.safetensors")
    head_file = out.with_name(out.name + ".head.safetensors")
    if writer:
        save_backbone(weights_file, net.backbone)
        save_finetuned_head(out, net, job.head, weights_file, config, state, val, test, seconds,
                            dataset.root, job.train_labels)
    distributed.barrier()
    return FinetuneResult(head_file, weights_file, val, test, seconds, state["epoch"],
                          state["best_epoch"], run.resumed_from, state["curve"])


def find_lr(dataset: Dataset, head_path: str | Path, config: FinetuneConfig = FinetuneConfig(),
            start: float = 1e-6, end: float = 1.0, steps: int = 120,
            show_progress: bool = True) -> LRFindResult:
    """LR range test through backbone + head, warm-started from the head as `finetune` would be:
    the top rate sweeps start -> end with the lower groups at their `lr_ratio` shares. The
    suggestion is a `--lr` for `finetune` with the same settings."""
    if distributed.context().active:
        raise ConfigError("the learning-rate finder runs in one process: run the same command with "
                          "--lr-find without torchrun first (--lr auto then reuses its rate), or give --lr")
    job = _whole_network(dataset, head_path, config)

    def losses():
        data = job.loaders["train"]
        for epoch in itertools.count():
            for batch, size in _epoch_batches(data, epoch):
                yield _batch_loss(job.net, batch, size, job.class_weights, job.device, config, 1, data.dataset)

    return network_range_test(job.net, config, losses(), start, end, steps,
                              f"lr-find {job.backbone_name}", show_progress)


def range_test_settings(config: FinetuneConfig) -> dict:
    """The settings a range test's result depends on: not the rate it looks for, nor the length
    and stopping of the run it is for, nor where it runs."""
    skip = ("lr", "epochs", "head_epochs", "patience", "schedule", "device", "workers", "decode")
    return {k: v for k, v in asdict(config).items() if k not in skip}


def network_range_test(net: Network, config: FinetuneConfig, losses: Iterator[torch.Tensor], start: float,
                       end: float, steps: int, title: str, show_progress: bool = True) -> LRFindResult:
    """The range test on `net` with `config`'s optimiser, rate ratios, accumulation and BN mode;
    each next(losses) is one micro-batch's loss. `net` is left as it was."""
    saved = {k: v.detach().clone() for k, v in net.state_dict().items()}
    opt = make_optimizer(net, replace(config, lr=1.0))  # base_lr: each group's share of the top rate
    _set_train_mode(net, head_only=False, train_bn=config.train_bn)
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


def make_optimizer(net: Network, config: FinetuneConfig) -> torch.optim.Optimizer:
    """AdamW/SGD with discriminative rates: backbone groups bottom -> top at lr / lr_ratio ... lr."""
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
    """Learning rates per optimiser step over the whole run (warm-up + cosine, or cosine)."""
    config: FinetuneConfig
    steps_per_epoch: int

    def step(self, opt: torch.optim.Optimizer, step: int) -> None:
        """Optimiser step `step` of the run (0-based) at its scheduled rates; gradients cleared."""
        factor = lr_factor(self.config.schedule, step, self.steps_per_epoch * self.config.epochs)
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * factor
        opt.step()
        opt.zero_grad(set_to_none=True)


@dataclass
class Run:
    state: dict  # epoch, best_loss, best_epoch, since_best, curve, seconds (as checkpointed)
    resumed_from: int  # epochs already done when this process started
    start_time: float
    prior_seconds: float  # spent by earlier, interrupted runs of the same job

    def seconds(self) -> float:
        return self.prior_seconds + time.perf_counter() - self.start_time


def fit(net: Network, opt: torch.optim.Optimizer, config: FinetuneConfig, out: Path, title: str,
        start_time: float, train_epoch, validate, show_progress: bool = True, writer: bool = True) -> Run:
    """The epoch loop both fine-tunes share: resume, train, validate, keep the best, checkpoint,
    stop early. `train_epoch(epoch)` returns the mean train loss; `validate()` (val loss, top-1).
    Ends with the best epoch's weights loaded into `net`."""
    state = _resume(out, net, opt, config)
    run = Run(state, state["epoch"], start_time, state.get("seconds", 0.0))
    with progress_bar(config.epochs, title, unit="epoch", enabled=show_progress and writer) as advance:
        advance(run.resumed_from)
        for epoch in range(run.resumed_from, config.epochs):
            _set_train_mode(net, epoch < config.head_epochs, config.train_bn)
            torch.manual_seed(config.seed * 100_003 + epoch)  # dropout masks: the same after a resume
            train_loss = train_epoch(epoch)
            val_loss, val_top1 = validate()
            state["curve"].append({"epoch": epoch + 1, "train_loss": train_loss,
                                   "val_loss": val_loss, "val_top1": val_top1})
            if val_loss < state["best_loss"] or math.isinf(val_loss):  # no val split: keep the last
                state.update(best_loss=val_loss, best_epoch=epoch + 1, since_best=0)
                if writer:
                    _save_best(out, net)
            else:
                state["since_best"] += 1
            state.update(epoch=epoch + 1, seconds=run.seconds())
            if writer:
                _checkpoint(out, net, opt, state, config)
            distributed.barrier()  # the checkpoint is on disk before anyone goes on
            advance(1)
            if config.patience is not None and state["since_best"] >= config.patience:
                console.print(f"early stop after epoch {epoch + 1}: val loss has not improved for "
                              f"{config.patience} epochs (best: epoch {state['best_epoch']})")
                break
    distributed.barrier()
    net.load_state_dict(load_file(str(_best_path(out))))
    return run


def _check_head_fits(head: Head, dataset: Dataset) -> None:
    if list(head.classes) != list(dataset.classes):
        raise FeatxError(f"{head.path}: the head's classes {head.classes[:6]} do not match the data's "
                         f"{dataset.classes[:6]}; train a head on a store of this data first")


def _loader(dataset: Dataset, split: str, pre, recipe, config: FinetuneConfig, device, ctx):
    data = ImageSamples(dataset, split, pre, recipe, config.seed, use_device_decode(device, config.decode))
    workers = config.workers if config.workers is not None else (1 if (os.cpu_count() or 1) > 1 else 0)
    common = dict(num_workers=workers, collate_fn=_collate, pin_memory=device.type == "cuda",
                  timeout=600 if workers else 0, worker_init_fn=_one_thread)
    if split == "train":
        sampler = _RankBatches(data, config.seed, config.batch_size, ctx.rank, ctx.world_size)
        return torch.utils.data.DataLoader(data, batch_sampler=sampler, **common)
    return torch.utils.data.DataLoader(data, batch_size=config.batch_size, shuffle=False, **common)


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)  # decoding workers must not fight the model for cores


class _RankBatches(torch.utils.data.Sampler):
    """This rank's share of each global batch of a permutation seeded by (seed, epoch).

    Every rank walks the same global batches (the same order after a resume, and the same
    batches whatever the number of processes); rank r takes items r, r + W, ... of each. A final
    global batch with fewer items than processes is dropped (every rank must take a step).
    """

    def __init__(self, data: ImageSamples, seed: int, global_batch: int, rank: int, world: int):
        self.data, self.seed, self.global_batch, self.rank, self.world = data, seed, global_batch, rank, world

    def global_batches(self) -> list[np.ndarray]:
        order = np.random.default_rng([self.seed, self.data.epoch]).permutation(len(self.data))
        batches = [order[i:i + self.global_batch] for i in range(0, len(order), self.global_batch)]
        return [b for b in batches if len(b) >= self.world]

    def __len__(self) -> int:
        return len(self.global_batches())

    def __iter__(self):
        return iter([b[self.rank::self.world].tolist() for b in self.global_batches()])


def class_weights(train_labels: np.ndarray, classes: int, config: FinetuneConfig, device):
    """Inverse-frequency loss weights (mean 1 over samples) when `balance` asks for them."""
    if config.balance != "weights":
        return None
    counts = np.bincount(train_labels, minlength=classes).astype(np.float64)
    return torch.tensor(counts.sum() / np.maximum(counts, 1) / classes, dtype=torch.float32,
                        device=device)


def _set_train_mode(net: Network, head_only: bool, train_bn: bool) -> None:
    net.train()
    for p in net.backbone.parameters():
        p.requires_grad_(not head_only)
    for module in net.backbone.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and (head_only or not train_bn):
            module.eval()  # pretrained statistics: small fine-tuning batches are noisier


def autocast(device, config: FinetuneConfig):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp)
    return torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda" and dtype is not None)


def _epoch_batches(loader, epoch: int):
    """(this rank's batch, size of its global batch) of one training epoch, in order."""
    loader.dataset.epoch = epoch  # before global_batches(): the order and views depend on it
    return zip(loader, [len(b) for b in loader.batch_sampler.global_batches()])


def _train_epoch(net, loader, opt, config, epoch, schedule: Schedule, class_weights, device, ctx) -> float:
    model = net
    if ctx.active:  # wrapped per epoch: head-only epochs train fewer parameters
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None,
                                        broadcast_buffers=False)
    losses, step = [], epoch * schedule.steps_per_epoch
    opt.zero_grad(set_to_none=True)
    for i, (batch, global_size) in enumerate(_epoch_batches(loader, epoch)):
        last_micro = (i + 1) % config.accumulate == 0 or i + 1 == len(loader)
        with (model.no_sync() if ctx.active and not last_micro else contextlib.nullcontext()):
            loss = _batch_loss(model, batch, global_size, class_weights, device, config, ctx.world_size,
                               loader.dataset)
            (loss / config.accumulate).backward()
        losses.append(float(loss.detach()))
        if last_micro:
            schedule.step(opt, step)
            step += 1
    return float(np.mean(losses)) if losses else float("nan")


def _batch_loss(model, batch, global_size: int, class_weights, device, config, world: int,
                data: ImageSamples):
    """This rank's part of the global batch's mean loss, scaled so that DDP's gradient average
    (a mean over ranks) equals the single-process gradient of the same global batch."""
    batch = views_on_device(batch, data, device)
    if batch is None:  # every image of this share failed to decode: a zero loss keeps ranks in step
        return sum(p.sum() * 0 for p in model.parameters() if p.requires_grad)
    x, y = batch
    x = normalize(x, data.pre)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    try:
        with autocast(device, config):
            logits = model(x)
    except torch.OutOfMemoryError:
        raise FeatxError(f"CUDA out of memory at batch size {len(x)} per process: use a smaller "
                         "--batch-size with --accumulate N to keep the effective batch") from None
    per_item = F.cross_entropy(logits.float(), y.to(device), weight=class_weights,
                               label_smoothing=config.label_smoothing, reduction="none")
    return per_item.sum() * world / global_size


@torch.no_grad()
def _predict(net, loader, device, config) -> tuple[np.ndarray, np.ndarray]:
    net.eval()
    probs, labels = [], []
    for batch in loader:
        batch = views_on_device(batch, loader.dataset, device)
        if batch is None:
            continue
        x, y = batch
        with autocast(device, config):
            logits = net(normalize(x, loader.dataset.pre))
        probs.append(torch.softmax(logits.float(), 1).cpu().numpy())
        labels.append(y.cpu().numpy())
    if not probs:
        return np.zeros((0, 0)), np.zeros(0, np.int64)
    return np.concatenate(probs), np.concatenate(labels)


def _val(net, loader, device, config) -> tuple[float, float]:
    return loss_and_top1(*_predict(net, loader, device, config))


def loss_and_top1(probs: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(NLL, top-1) of predicted probabilities; (inf, 0) without samples (no val split)."""
    if not len(y):
        return float("inf"), 0.0
    nll = float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1)).mean())
    return nll, float((probs.argmax(1) == y).mean())


def _metrics(net, loader, head: Head, device, config) -> Metrics | None:
    probs, y = _predict(net, loader, device, config)
    if not len(y):
        return None
    paths = [s.path for s in loader.dataset.samples]
    return evaluate(y, probs, head.class_names, paths if len(paths) == len(y) else None)


# --- files: checkpoint, best state, results --------------------------------------------------------

def _files(out: Path) -> dict[str, Path]:
    return {"ckpt": out.with_name(out.name + ".checkpoint.safetensors"),
            "ckpt_json": out.with_name(out.name + ".checkpoint.json"),
            "best": _best_path(out)}


def _best_path(out: Path) -> Path:
    return out.with_name(out.name + ".best.safetensors")


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _save_best(out: Path, net: Network) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    _atomic(_best_path(out), lambda p: save_file(state, str(p)))


def _checkpoint(out: Path, net: Network, opt, state: dict, config: FinetuneConfig) -> None:
    """Model + optimiser tensors (safetensors), then the JSON that makes the checkpoint valid."""
    files = _files(out)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    opt_state = opt.state_dict()
    for index, values in opt_state["state"].items():
        for name, value in values.items():
            tensors[f"opt.{index}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    _atomic(files["ckpt"], lambda p: save_file(tensors, str(p)))
    meta = {"format": CHECKPOINT_FORMAT, "config": asdict(config), "state": state,
            "checkpoint_sha256": sha256_file(files["ckpt"])}
    _atomic(files["ckpt_json"], lambda p: p.write_text(json.dumps(meta)))


def _resume(out: Path, net: Network, opt, config: FinetuneConfig) -> dict:
    fresh = {"epoch": 0, "best_loss": float("inf"), "best_epoch": 0, "since_best": 0, "curve": []}
    files = _files(out)
    if not files["ckpt_json"].is_file():
        return fresh
    try:
        meta = json.loads(files["ckpt_json"].read_text())
        valid = (meta.get("format") == CHECKPOINT_FORMAT and files["ckpt"].is_file()
                 and meta.get("checkpoint_sha256") == sha256_file(files["ckpt"]))
    except (OSError, ValueError):
        valid = False
    if not valid:
        console.print(f"[yellow]warning:[/] {files['ckpt_json']}: unreadable checkpoint; starting over")
        return fresh
    if meta["config"] != json.loads(json.dumps(asdict(config))):
        changed = sorted(k for k in meta["config"] if meta["config"][k] != asdict(config).get(k))
        raise FeatxError(f"{files['ckpt_json']}: a checkpoint with other settings ({', '.join(changed)}) "
                         "is here; use the same options to resume, or another --out")
    tensors = load_file(str(files["ckpt"]))
    net.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    opt_state = opt.state_dict()
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, index, name = key.split(".", 2)
            opt_state["state"].setdefault(int(index), {})[name] = value
    opt.load_state_dict(opt_state)
    return meta["state"]


def save_backbone(path: Path, backbone: torch.nn.Module) -> Path:
    """The fine-tuned backbone as a weights file `featx extract --weights` accepts."""
    state = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    _atomic(path, lambda p: save_file(state, str(p)))
    return path


def save_finetuned_head(out: Path, net: Network, head: Head, weights_file: Path,
                         config: FinetuneConfig, state: dict, val, test, seconds: float,
                        dataset_root: Path, train_labels: np.ndarray) -> Path:
    meta = {k: v for k, v in head.meta.items() if k not in ("format",)}
    sha = sha256_file(weights_file)
    meta.update({
        "kind": "finetune", "weights": {"source": str(weights_file.resolve()), "sha256": sha},
        "weights_sha256": sha, "warm_start": str(head.path), "config": asdict(config),
        "params": {"lr": config.lr, "lr_ratio": config.lr_ratio, "best_epoch": state["best_epoch"],
                   "epochs_run": state["epoch"]},
        "search": [], "curve": state["curve"], "seconds": seconds,
        "metrics": {"val": val.to_dict() if val else None, "test": test.to_dict() if test else None},
        "train_counts": np.bincount(train_labels, minlength=len(head.classes)).tolist(),
        "dataset_root": str(dataset_root), "store": None,
    })
    meta["normalize"] = "l2" if net.head.l2 else "standard"
    return save_head(out.with_name(out.name + ".head"), net.head.tensors(), meta)
