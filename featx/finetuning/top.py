"""Fine-tune only the top of a network, on activation maps a store cached at a cut point.

    featx extract elpv -b efficientnet_lite0 --cut block14 --views 2 --aug flips
    featx train-head STORE --kind linear --out heads/
    featx finetune STORE --head heads/lin.safetensors --from-block block14

The frozen bottom never runs again: every epoch reads the maps `featx extract --cut` stored
(clean, or one of the K stored augmented views per training image) and trains the blocks from
the cut up plus the warm-started head. Random mirrors of the maps are free augmentation
(`map_aug`: left-right by default; top-bottom and 90-degree turns only when asked). The result
is saved like a whole-network fine-tune: the original bottom + the tuned top as one backbone
weights file, and a featx head on top of it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
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
from featx.backbones.cuts import trunk_for
from featx.backbones.weights import weights_arg
from featx.runtime.device import resolve_device
from featx.errors import ConfigError, FeatxError
from featx.finetuning.checkpoint import run_identity, save_backbone, save_finetuned_head
from featx.finetuning.config import FinetuneConfig, FinetuneResult
from featx.finetuning.data import cpu_share
from featx.finetuning.loop import (Schedule, autocast, fit, loss_and_top1, loss_weights, make_optimizer,
                                 network_range_test)
from featx.finetuning.model import HeadModule, Network
from featx.heads.io import Head
from featx.training.lr_range import LRFindResult
from featx.runtime.memory import available_memory_bytes
from featx.evaluation.metrics import evaluate
from featx.store import IDENTITY_KEYS, FeatureStore


def finetune_top(store_path: str | Path, head_path: str | Path, out: str | Path,
                 config: FinetuneConfig, show_progress: bool = True) -> FinetuneResult:
    """Train the blocks above `config.from_block` + the head on the maps `store_path` cached there."""
    start_time, out = time.perf_counter(), Path(out)
    check_writable(out.parent)  # before the maps are read and the first epoch trained
    job = TopNetwork.build(store_path, head_path, config)
    opt = make_optimizer(job.net, config)
    schedule = Schedule(config, steps_per_epoch=math.ceil(job.batches_per_epoch / config.accumulate))
    with cpu_share(job.device, workers=0):  # the maps are in memory: no loader processes
        run = fit(job, opt, schedule, config, out, f"finetune {job.backbone_name}", start_time, show_progress)
        metrics = {}
        for split in ("val", "test"):
            probs, y = predict_maps(job.net, job.maps.split(split), job.device, config)
            metrics[split] = evaluate(y, probs, job.head.class_names, job.maps.paths(split)) if len(y) else None
    weights_file = save_backbone(out.with_name(out.name + ".backbone.safetensors"), job.model)
    seconds = run.seconds()
    head_file = save_finetuned_head(out, job.net, job.head, weights_file, config, run.state, metrics["val"],
                                    metrics["test"], seconds, job.dataset_root, job.maps.y_train)
    return FinetuneResult(head_file, weights_file, metrics["val"], metrics["test"], seconds,
                          run.state["epoch"], run.state["best_epoch"], run.resumed_from, run.state["curve"])


def find_lr_top(store_path: str | Path, head_path: str | Path, config: FinetuneConfig,
                start: float = 1e-6, end: float = 1.0, steps: int = 120,
                show_progress: bool = True) -> LRFindResult:
    """LR range test of the top above `config.from_block` + head on the cached maps: a `lr` for
    `finetune_top` with the same settings."""
    job = TopNetwork.build(store_path, head_path, config)

    def losses():
        for epoch in itertools.count():
            for x, y in job.maps.train_batches(epoch, config.batch_size, config.seed):
                yield job.loss(x, y)

    return network_range_test(job.net, config, losses(), start, end, steps, f"lr-find {job.backbone_name}",
                              show_progress)


@dataclass
class TopNetwork:
    """Everything a top-block fine-tune (or its LR range test) trains with."""
    net: Network  # the top blocks (modules of `model`, shared) + the head
    model: torch.nn.Module  # the whole backbone: original bottom, the top being tuned
    backbone_name: str
    head: Head
    maps: MapData
    dataset_root: Path
    class_weights: torch.Tensor | None
    device: torch.device
    config: FinetuneConfig
    identity: dict  # the warm-start head and the store, as a checkpoint records them

    @classmethod
    def build(cls, store_path: str | Path, head_path: str | Path, config: FinetuneConfig) -> TopNetwork:
        """The store's backbone, its top above the cut with the head on it, and the cached maps."""
        if distributed.context().active:
            raise ConfigError("--from-block trains in one process (the cached maps make it cheap); "
                              "run it without torchrun")
        cut = config.from_block
        head = Head.load(head_path)
        device = resolve_device(config.device)
        torch.manual_seed(config.seed)
        with FeatureStore(store_path) as store:
            check_store(store, store_path, head, cut)
            attrs = dict(store.attrs)
            maps = MapData(store, cut, config.map_aug)
        backbone = create_backbone(attrs["backbone"], weights_arg(attrs["weights"]), int(attrs["seed"]),
                                   int(attrs["input_size"]))
        trunk = trunk_for(backbone.model)
        trunk.check(cut, backbone.name)
        # The top's modules are the backbone's own: tuning them tunes `backbone.model` in place.
        top, pool = trunk.top(cut), head.meta.get("pool")
        if pool:  # the head reads the maps pooled at a block too (extract --pool): it must be in the top
            if trunk.cuts.index(pool) < trunk.cuts.index(cut):
                raise FeatxError(f"{head.path}: the head reads maps pooled at '{pool}', below --from-block "
                                 f"{cut}; train a head on the final features (featx train-head STORE "
                                 f"--features final), or cut at or below {pool}")
            from featx.backbones.cuts import WithPooled

            top = WithPooled(top, trunk.block(pool))
        net = Network(top, HeadModule(head)).to(device)
        return cls(net, backbone.model, f"{backbone.name} above {cut}", head, maps,
                   Path(attrs["dataset_root"]), loss_weights(maps.y_train, len(head.classes), config, device),
                   device, config, run_identity(head, store_path, store_fingerprint(attrs)))

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(self.maps.n_train / self.config.batch_size)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean loss of a batch of maps (B, C, H, W) with labels (B,)."""
        with autocast(self.device, self.config):
            logits = self.net(x.to(self.device).float())  # (B, classes)
        return F.cross_entropy(logits.float(), y.to(self.device), weight=self.class_weights,
                               label_smoothing=self.config.label_smoothing)

    def train_epoch(self, epoch: int, opt: torch.optim.Optimizer, schedule: Schedule) -> float:
        """One epoch of micro-batches; an optimiser step every `accumulate` of them."""
        config = self.config
        losses, step = [], epoch * schedule.steps_per_epoch
        opt.zero_grad(set_to_none=True)
        for i, (x, y) in enumerate(self.maps.train_batches(epoch, config.batch_size, config.seed)):
            loss = self.loss(x, y)
            (loss / config.accumulate).backward()
            losses.append(float(loss.detach()))
            if (i + 1) % config.accumulate == 0 or i + 1 == self.batches_per_epoch:
                schedule.step(opt, step)
                step += 1
        return float(np.mean(losses))

    def validate(self) -> tuple[float, float]:
        return loss_and_top1(*predict_maps(self.net, self.maps.split("val"), self.device, self.config))


def store_fingerprint(attrs: dict) -> str:
    """A store's identity as one hash (featx.store.IDENTITY_KEYS: backbone, weights,
    preprocessing, views, seed, the data's fingerprint, cut): the same maps, wherever the file."""
    key = json.dumps({k: attrs.get(k) for k in IDENTITY_KEYS}, sort_keys=True, default=str)
    return hashlib.sha256(key.encode()).hexdigest()


def check_store(store: FeatureStore, store_path: str | Path, head: Head, cut: str) -> None:
    """The store holds complete maps at `cut`, of the backbone and classes `head` was trained on."""
    attrs = store.attrs
    if not store.has_cut(cut):
        raise FeatxError(f"{store_path}: no maps cached at '{cut}' (store cut: "
                         f"{store.cut or 'none'}); run `featx extract --cut {cut}` first")
    if not store.complete:
        raise FeatxError(f"{store_path}: the store is incomplete; finish `featx extract` first")
    if list(head.classes) != list(store.classes) or head.meta["weights_sha256"] != attrs["weights_sha256"]:
        raise FeatxError(f"{head.path}: the head was not trained on this store's backbone and "
                         "classes; train one on it (featx train-head STORE)")


class MapData:
    """A store's cached maps in memory: training maps (clean + stored views), val/test clean."""

    def __init__(self, store: FeatureStore, cut: str, map_aug: str = "flip"):
        self.map_aug = map_aug
        check_memory(store, cut)
        ok = np.ones(len(store.labels), dtype=bool)
        ok[list(store.failed)] = False  # failed images have no maps
        self.labels, self.store_paths = store.labels, store.paths
        all_clean = torch.from_numpy(store.cut_maps(cut, "clean"))  # (N, C, H, W)
        train_rank = np.flatnonzero(ok[store.aug_rows]) if len(store.aug_rows) else np.zeros(0, int)
        self.train_rows = store.aug_rows[train_rank]  # every training image, in store order
        self.y_train = store.labels[self.train_rows]
        self.clean_train = all_clean[self.train_rows]
        aug = store.cut_maps(cut, "aug")  # (K, N_train, C, H, W)
        self.views = (torch.from_numpy(aug)[:, train_rank] if aug is not None and aug.shape[0]
                      else torch.zeros((0, *self.clean_train.shape)))
        self.rows = {s: np.flatnonzero(ok & (store.splits == s)) for s in ("val", "test")}
        self.clean = {s: all_clean[r] for s, r in self.rows.items()}
        self.n_train = len(self.train_rows)
        if not self.n_train:
            raise FeatxError(f"{store.path}: no training images with maps to fine-tune on")

    def train_batches(self, epoch: int, batch_size: int, seed: int):
        """Shuffled batches of (maps, labels); per image a random stored view (or the clean map)
        and a random symmetry, all drawn from (seed, epoch) so a resumed run sees the same."""
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(self.n_train)
        view = rng.integers(0, len(self.views) + 1, size=self.n_train)  # 0 = clean
        none = np.zeros(self.n_train, int)
        rot = rng.integers(0, 4, size=self.n_train) if self.map_aug == "rot90-flip" else none
        flip = rng.integers(0, 2, size=self.n_train) if self.map_aug != "none" else none
        vflip = rng.integers(0, 2, size=self.n_train) if self.map_aug == "hv-flip" else none
        for i in range(0, self.n_train, batch_size):
            idx = order[i:i + batch_size]
            x = torch.stack([square_symmetry(self.clean_train[j] if view[j] == 0 else self.views[view[j] - 1, j],
                                             int(rot[j]), bool(flip[j]), bool(vflip[j])) for j in idx])
            yield x, torch.from_numpy(self.y_train[idx])

    def split(self, split: str) -> tuple[torch.Tensor, np.ndarray]:
        return self.clean[split], self.labels[self.rows[split]]

    def paths(self, split: str) -> list[str]:
        return [self.store_paths[r] for r in self.rows[split]]


def check_memory(store: FeatureStore, cut: str) -> None:
    """Refuse up front, in one line, maps that cannot fit in memory (not an OOM kill later)."""
    need = store.cut_nbytes(cut)
    free = available_memory_bytes()  # a container's cgroup limit counts
    if free is None:  # the platform does not say: let it try
        return
    if need > 0.8 * free:
        raise FeatxError(f"{store.path}: the maps at '{cut}' need {need / 2**20:,.0f} MB in memory and "
                         f"{free / 2**20:,.0f} MB are free; cut higher (featx backbones --cuts) or "
                         "extract fewer --views")


def square_symmetry(m: torch.Tensor, rot: int, flip: bool, vflip: bool = False) -> torch.Tensor:
    """One of the 8 symmetries of a square map (C, H, W): `rot` quarter turns (only when the map
    is square), then a left-right mirror (`flip`) and a top-bottom one (`vflip`)."""
    m = torch.rot90(m, rot, dims=(-2, -1)) if m.shape[-1] == m.shape[-2] else m
    m = m.flip(-1) if flip else m
    return m.flip(-2) if vflip else m


@torch.no_grad()
def predict_maps(net: Network, data: tuple[torch.Tensor, np.ndarray], device: torch.device,
                 config: FinetuneConfig, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(class probabilities (N, classes), labels (N,)) of clean maps (N, C, H, W) with labels."""
    x, y = data
    net.eval()
    probs = []
    for i in range(0, len(x), batch):
        with autocast(device, config):
            probs.append(torch.softmax(net(x[i:i + batch].to(device).float()).float(), 1).cpu().numpy())
    return (np.concatenate(probs) if probs else np.zeros((0, 0))), np.asarray(y)
