"""torch.distributed for extraction: who am I, which rows are mine, wait for the others.

Under `torchrun` (or Slurm + torchrun), WORLD_SIZE/RANK/LOCAL_RANK are set; featx then splits
the work by **contiguous runs of the single-process batch plan**: rank r gets the batches whose
images fall in the r-th equal share of the total. Contiguous, because each shard is then a block of
rows that merges by concatenation (or maps 1:1 into a virtual dataset); batch-aligned, because every
batch a rank runs is exactly a batch the single-process run would run, so the merged store holds
the same numbers as a one-process extraction (same engine and thread count).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

import numpy as np
import torch

# Ranks wait for the slowest shard at the barrier; extraction can take hours.
BARRIER_TIMEOUT = dt.timedelta(hours=24)


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def context() -> DistContext:
    """The torchrun environment, or a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    return DistContext(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def init(ctx: DistContext, device: torch.device) -> None:
    """Join the process group (gloo on CPU, nccl on CUDA), once."""
    import torch.distributed as dist

    if ctx.active and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=BARRIER_TIMEOUT)


def finish() -> None:
    """Leave the process group (torch warns at exit otherwise)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def shard_bounds(batch_starts: list[int], batch_images: list[int], num_samples: int,
                 world_size: int) -> list[tuple[int, int]]:
    """[start, stop) sample rows of each rank: contiguous batches, balanced by image count."""
    total = sum(batch_images)
    # Each batch goes to the rank whose share holds the batch's middle image.
    middle = np.cumsum(batch_images) - np.asarray(batch_images) / 2 if batch_images else np.zeros(0)
    owner = np.minimum((middle * world_size) // max(total, 1), world_size - 1).astype(int)
    bounds = []
    for rank in range(world_size):
        mine = np.flatnonzero(owner == rank)
        if len(mine):
            start = batch_starts[mine[0]]
            stop = batch_starts[mine[-1] + 1] if mine[-1] + 1 < len(batch_starts) else num_samples
        else:  # more ranks than batches: an empty shard just after the previous one
            start = stop = bounds[-1][1] if bounds else 0
        bounds.append((int(start), int(stop)))
    return bounds
