"""The entry points: `extract` a dataset into a store, `embed` new images in memory."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from featx.runtime import distributed
from featx.backbones import Backbone, list_backbones
from featx.config import as_config, with_options
from featx.errors import ConfigError
from featx.data import Dataset, as_dataset
from featx.runtime.device import resolve_device
from featx.extraction.config import ExtractConfig, ExtractResult
from featx.extraction.decode import guarded
from featx.extraction.engine_choice import Taps, engine_for, tapped_module
from featx.extraction.job import ExtractJob, build_job
from featx.extraction.noop import check_failures, complete_result
from featx.extraction.plan import plan_batches
from featx.extraction.runner import Runner
from featx.extraction.sharded import extract_sharded
from featx.extraction.store_run import extract_store
from featx.runtime.progress import progress_bar


def extract(data: Dataset | str | os.PathLike, backbone_name: str, out: str | os.PathLike = "stores",
            config: ExtractConfig | None = None, store_path: Path | None = None,
            show_progress: bool = True, **options) -> ExtractResult:
    """Extract (or resume, or confirm complete) the store of `backbone_name` over `data`.

    Args:
        data: a Dataset, or what `open_dataset` takes (a folder, a manifest, "elpv").
        out: the folder of the stores; the store's name says what is in it.
        config, options: ExtractConfig, or its fields as keywords (views=4, aug="mild", ...);
            keywords override the config's fields.

    Under torchrun (WORLD_SIZE > 1) each rank extracts its shard, and rank 0 merges them.
    """
    check_backbone_name(backbone_name)
    config = with_options(as_config(ExtractConfig, config), options)  # before any file is written
    dataset = as_dataset(data)
    out_dir = Path(out)
    ctx = distributed.context()
    device = resolve_device(config.device)
    if ctx.active and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", ctx.local_rank)  # one GPU per rank
        torch.cuda.set_device(device)
    if not ctx.active:  # a complete store: found without building the backbone (noop)
        done = complete_result(dataset, backbone_name, out_dir, config, store_path, str(device))
        if done is not None:
            return done
    job = build_job(dataset, backbone_name, out_dir, config, device, store_path, show_progress)
    result = extract_sharded(job, ctx) if ctx.active else extract_store(job)
    if result.failed and ctx.rank == 0:
        check_failures(dataset, result)
    return result


def check_backbone_name(name) -> None:
    """A backbone is named by text (the registry would fail on None or 123 with an AttributeError)."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"backbone must be a backbone name like {', '.join(list_backbones()[:4])} "
                          f"(`featx backbones` lists them), got {name!r}")


def embed(dataset: Dataset, backbone: Backbone, device: str = "auto", batch_size: int = 64,
          workers: int | None = None, engine: str = "auto", pool: str | None = None,
          tta: str = "none", threads: int | None = None, taps: Taps | None = None
          ) -> tuple[np.ndarray, dict[int, str]]:
    """Clean-view features [N, D] of every sample, in memory (prediction on new images), with
    the pooled maps entering block `pool` appended and averaged over the `tta` symmetries, as
    `extract --pool --tta` stores them; `threads`: ONNX Runtime threads, as `extract --threads`.
    `taps`: `tapped_module(backbone, None, pool, tta)` kept from an earlier call (it runs a
    shape-probe forward: a caller embedding again and again passes it back).

    Failed images keep a zero row and are listed in the returned {row: reason}.
    """
    dev = resolve_device(device)
    config = ExtractConfig(batch_size=batch_size, workers=workers, device=device, decode="cpu",
                           engine=engine, pool=pool, tta=tta, threads=threads)
    job = ExtractJob(dataset, backbone, None, None, config, dev, False,
                     taps if taps is not None else tapped_module(backbone, None, pool, tta), gpu_decode=False)
    runner = Runner(job, engine_for(backbone, config, dev, engine, taps=job.taps), batch_size)
    plan = plan_batches(runner.is_train, 0, batch_size)
    out = np.zeros((len(dataset.samples), job.feature_dim), np.float32)
    failed: dict[int, str] = {}
    with progress_bar(len(dataset.samples), f"embed {backbone.name}") as advance:
        for batch, item in zip(plan, guarded(iter(runner.loader(plan)), resumable=False)):
            feats, owner = runner.forward(item)
            out[batch.start + owner[:, 0]] = feats.cpu().numpy()  # (B, D) into their sample rows
            failed.update(item["failed"])
            advance(batch.stop - batch.start)
    return out, failed
