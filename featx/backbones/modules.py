"""Torch helpers the backbone families share: describe without allocating, seeded init, surgery."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn


@contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Build modules without allocating or initialising their weights (to describe them).

    Unlike `with torch.device("meta")`, plain tensor arithmetic in a model's constructor
    (regnet computes its widths with torch ops) still runs on real tensors.
    """
    original = nn.Module.register_parameter

    def register(module: nn.Module, name: str, param) -> None:
        if param is not None:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        original(module, name, param)

    nn.Module.register_parameter = register
    try:
        yield
    finally:
        nn.Module.register_parameter = original


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def last_linear(model: nn.Module) -> tuple[str, nn.Linear] | None:
    """The classifier of most ImageNet models: the last nn.Linear in module order."""
    found = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            found = (name, module)
    return found


def replace_module(model: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def seeded_init(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    """Random init that is the same on every run and machine with the same seed."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return build()
    finally:
        torch.random.set_rng_state(state)
