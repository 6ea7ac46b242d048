"""Test-time augmentation by symmetries: a feature averaged over an image and its flips/turns.

    Symmetrized(model, "flip")(x) == (model(x) + model(x.flip(-1))) / 2

`extract --tta RECIPE` stores these averages for every image (train, val, test, and `predict`
computes them alike), so a linear head on them scores exactly the average of its logits over the
views. Only `dihedral` turns images by 90 degrees: right for orientation-free data (some
microscopy, aerial tiles), wrong for most (ELPV cells have busbars one way: rotated views cost
13-17 points there).
"""

from __future__ import annotations

import torch
from torch import nn


def _h(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-1)


def _v(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-2)


def _t(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(-1, -2)


# The views beside the identity: each a composition of mirror (h), upside-down (v), transpose (t).
TTA_RECIPES: dict[str, tuple[tuple, ...]] = {
    "none": (),
    "flip": ((_h,),),
    "hv-flip": ((_h,), (_v,), (_h, _v)),
    "dihedral": ((_h,), (_v,), (_h, _v), (_t,), (_t, _h), (_t, _v), (_t, _h, _v)),
}


class Symmetrized(nn.Module):
    """model(x) averaged over x and its views under a TTA recipe; a (features, maps) output
    (extract --cut) averages the features and keeps the maps of x itself."""

    def __init__(self, model: nn.Module, recipe: str):
        super().__init__()
        self.model, self.views = model, TTA_RECIPES[recipe]

    def forward(self, x: torch.Tensor):
        first = self.model(x)
        feats = first[0] if isinstance(first, tuple) else first
        total = feats
        for ops in self.views:
            view = x
            for op in ops:
                view = op(view)
            out = self.model(view)
            total = total + (out[0] if isinstance(out, tuple) else out)
        mean = total / (1 + len(self.views))
        return (mean, first[1]) if isinstance(first, tuple) else mean
