"""Where the numbers are computed and where images are decoded: one place for both choices.

    device = resolve_device("auto")            # cuda when there is one, else cpu
    use_device_decode(device, "auto")         # nvjpeg for JPEG files on CUDA
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from featx.errors import ConfigError
from featx.runtime.settings import DECODES

DEVICES_HELP = "auto | cpu | cuda | cuda:N"
# nvjpeg decodes these on the GPU; other formats always go through PIL on the CPU.
JPEG_SUFFIXES = (".jpg", ".jpeg")


def resolve_device(device: str) -> torch.device:
    """`auto` picks CUDA when available; an explicit device must exist here."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r} (use {DEVICES_HELP})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device} requested but CUDA is not available here")
    return dev


def use_device_decode(device: torch.device, decode: str) -> bool:
    """Decode JPEG files with torchvision.io on the model's device (nvjpeg on CUDA)?"""
    if decode not in DECODES:
        raise ConfigError(f"unknown decode {decode!r} (use {', '.join(DECODES)})")
    if decode == "gpu" and device.type != "cuda":
        raise ConfigError("--decode gpu needs a CUDA device")
    return device.type == "cuda" and decode in ("auto", "gpu")


def one_thread(_: int) -> None:
    """DataLoader worker_init_fn: decoding workers use one torch thread each (no oversubscription)."""
    torch.set_num_threads(1)


# glibc hands a freed block above its mmap threshold (at most 32 MiB by default) back to the
# kernel at once, and the next batch's activations fault every page in again: a training step of
# efficientnet_lite0 at batch 32 on a CPU took ~770k page faults and 1-1.7 s of system time
# (issue 21). 1 GiB: every activation of such a step is kept for reuse.
KEEP_FREED_BYTES = 1 << 30


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed memory for reuse instead of returning it to the kernel after
    every training step (the process keeps its peak size); True where it applied (glibc only)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, Windows, musl without it)
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    return bool(mallopt(m_mmap_threshold, KEEP_FREED_BYTES)) & bool(mallopt(m_trim_threshold, KEEP_FREED_BYTES))


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# A head's training step is a [batch, dim] matrix product (a few, for an MLP or a batched sweep):
# below this many batch x dim a second intra-op thread costs more in wake-ups than it saves, and
# on a machine whose other cores are busy torch's spinning threads wait on each other (one epoch
# of the default linear sweep on the busy 2-core box: 71 s with 2 threads, 28 s with 1; issue 31).
THREADED_BATCH_X_DIM = 1 << 22  # e.g. batch 2,048 x 2,048 features


def head_threads(batch: int, dim: int, requested: int | None = None) -> int:
    """torch threads for training a head on [batch, dim] steps: `requested` when given, else 1
    unless the product is large, then every usable core torch would use."""
    if requested:
        return requested
    if batch * dim < THREADED_BATCH_X_DIM:
        return 1
    return max(1, min(torch.get_num_threads(), usable_cores()))


@contextmanager
def torch_threads(threads: int) -> Iterator[int]:
    """torch's intra-op thread count set to `threads` inside the block, put back after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)
