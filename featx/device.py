"""Where the numbers are computed and where images are decoded: one place for both choices.

    device = resolve_device("auto")            # cuda when there is one, else cpu
    use_device_decode(device, "auto")         # nvjpeg for JPEG files on CUDA
"""

from __future__ import annotations

import torch

from featx.errors import ConfigError

DEVICES_HELP = "auto | cpu | cuda | cuda:N"
DECODES = ("auto", "cpu", "gpu")
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
