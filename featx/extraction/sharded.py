"""Extraction split across processes: each rank writes a shard store, rank 0 merges them.

Under torchrun, rank r takes a contiguous run of the single-process batch plan (featx.runtime.distributed
explains why), so the merged store holds the numbers a one-process run would. An update
(featx.extraction.store_run) shares only the rows it computes: its delta store is sharded the same
way. `extract_shard`
writes one shard without torchrun, for jobs scheduled one by one (`featx merge` joins them).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from featx.runtime import distributed
from featx.data import Dataset
from featx.runtime.device import resolve_device
from featx.errors import FeatxError, StoreError
from featx.extraction.config import ExtractConfig, ExtractResult
from featx.extraction.job import ExtractJob, build_job
from featx.extraction.plan import delta_path, plan_batches, remove_delta
from featx.extraction.store_run import delta_job, drop_stale_delta, extract_store
from featx.store import (StoreLock, assemble_update, count_failed, merge_shards, plan_update,
                         read_attrs, shard_path)

SHARDING = "contiguous runs of the single-process batch plan, balanced by image count"


def extract_sharded(job: ExtractJob, ctx: distributed.DistContext) -> ExtractResult:
    """This rank's shard into its own store; rank 0 merges all shards into `job.path`."""
    final, dataset = job.path, job.dataset
    distributed.init(ctx, job.device)
    if final.is_file() and not job.config.overwrite:
        return _check_finished(job, ctx)
    result = _extract_shard(job.but(show_progress=job.show_progress and ctx.rank == 0), ctx.rank,
                            ctx.world_size)
    distributed.barrier()  # every shard written
    if ctx.rank == 0:
        _merge_and_remove(final, ctx.world_size)
    distributed.barrier()  # merged: every rank may now read the final store
    if ctx.rank != 0:
        return replace(result, store=str(final))
    attrs = read_attrs(final)  # rank 0 reports the whole run, not its own part
    seconds = float(attrs.get("extract_seconds", result.seconds))
    rate = float(attrs.get("images_per_second", result.images_per_second))
    return replace(result, store=str(final), samples=len(dataset.samples), seconds=seconds,
                   images=int(round(rate * seconds)), images_per_second=rate,
                   failed=count_failed(final))


def _check_finished(job: ExtractJob, ctx: distributed.DistContext) -> ExtractResult:
    """`job.path` exists: a finished merged store is checked by rank 0 (same settings and data,
    under the store's lock) while the other ranks wait for its verdict."""
    final, dataset = job.path, job.dataset
    attrs = read_attrs(final)
    if not attrs.get("complete", 0):
        raise StoreError(f"{final} exists and is an unfinished single-process store; finish "
                         "it without torchrun, or pass --overwrite")
    if job.config.update and attrs.get("dataset_fingerprint") != dataset.fingerprint:
        return _update_sharded(job, ctx)
    result = extract_store(job) if ctx.rank == 0 else None
    distributed.barrier()
    return result or ExtractResult(str(final), job.backbone.name, "complete", len(dataset.samples),
                                   0, count_failed(final), 0.0, 0.0, str(job.device))


def _update_sharded(job: ExtractJob, ctx: distributed.DistContext) -> ExtractResult:
    """An update under torchrun: every rank plans it alike (read only, deterministic), the ranks
    share the rows to compute as a sharded delta store, and rank 0 assembles the new store
    under the store's lock."""
    final = job.path
    lock = StoreLock(final)
    if ctx.rank == 0:
        lock.acquire()  # before any rank plans: no other writer until the rename
        extract_store(job.but(show_progress=False), check_only=True)
    try:
        distributed.barrier()
        start = time.perf_counter()
        dataset, plan = plan_update(final, job.dataset)
        delta, images = delta_path(final), 0
        if len(plan.compute):
            sub = replace(dataset, samples=[dataset.samples[i] for i in plan.compute])
            if ctx.rank == 0:
                drop_stale_delta(delta, sub)
            distributed.barrier()
            images = extract_sharded(delta_job(job, sub, delta), ctx).images
        version, previous = 0, -1
        if ctx.rank == 0:
            seconds = time.perf_counter() - start
            entry = assemble_update(final, dataset, plan, delta if len(plan.compute) else None, seconds)
            version, previous = entry["version"], entry["previous"]
            remove_delta(final)
    finally:
        lock.release()
    distributed.barrier()
    seconds = time.perf_counter() - start
    return ExtractResult(str(final), job.backbone.name, "updated", len(dataset.samples), images,
                         count_failed(final), seconds, images / seconds if seconds else 0.0,
                         str(job.device), update=plan.summary(), version=version, same_data=version == previous)


def _merge_and_remove(final: Path, world_size: int) -> None:
    shards = [shard_path(final, r, world_size) for r in range(world_size)]
    merge_shards(shards, final)
    for path in shards:  # the merged copy is self-contained; `featx merge` keeps shards
        path.unlink()
        Path(str(path) + ".lock").unlink(missing_ok=True)


def extract_shard(dataset: Dataset, backbone_name: str, out_dir: Path, rank: int, world_size: int,
                  config: ExtractConfig = ExtractConfig(), store_path: Path | None = None,
                  show_progress: bool = True) -> ExtractResult:
    """Shard `rank` of `world_size` into its own store (`featx merge` joins them), no torchrun."""
    job = build_job(dataset, backbone_name, out_dir, config, resolve_device(config.device), store_path,
                    show_progress)
    return _extract_shard(job, rank, world_size)


def _extract_shard(job: ExtractJob, rank: int, world_size: int) -> ExtractResult:
    """Shard `rank` of `world_size` of the job into its own store beside `job.path`."""
    dataset, config, final = job.dataset, job.config, job.path
    is_train = np.array([s.split == "train" for s in dataset.samples])
    batch_size = _shard_batch_size(final, world_size, config.batch_size)
    plan = plan_batches(is_train, config.views, batch_size)
    bounds = distributed.shard_bounds([b.start for b in plan], [b.images(config.views) for b in plan],
                                      len(dataset.samples), world_size)
    start, stop = bounds[rank]
    shard = replace(dataset, samples=dataset.samples[start:stop])
    provenance = {"shard_rank": rank, "shard_world_size": world_size, "shard_start": start,
                  "shard_stop": stop, "full_num_samples": len(dataset.samples),
                  "full_dataset_fingerprint": dataset.fingerprint, "sharding": SHARDING}
    return extract_store(job.but(dataset=shard, path=shard_path(final, rank, world_size),
                                 config=replace(config, batch_size=batch_size)), provenance)


def _shard_batch_size(final: Path, world_size: int, default: int) -> int:
    """The batch size of shards already started (the shard bounds depend on it)."""
    for rank in range(world_size):
        path = shard_path(final, rank, world_size)
        if path.is_file():
            try:
                return int(read_attrs(path).get("batch_size", default))
            except FeatxError:
                continue
    return default
