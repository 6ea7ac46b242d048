"""Cut points: split a feature network into a frozen bottom and a trainable top.

    trunk = trunk_for(backbone)             # None if the architecture has no known cut points
    trunk.cuts                              # ["block1", ..., "block15"] for efficientnet_lite0
    maps = trunk.bottom("block11")(x)       # activations entering block 11
    feats = trunk.top("block11")(maps)      # == backbone.model(x)

`featx extract --cut NAME` stores the maps, and `featx finetune --from-block NAME` trains only
the top on them, so the frozen bottom never runs again. Top and bottom share the backbone's
modules: training the top updates the backbone itself.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from featx.backbones.efficientnet_lite_net import EfficientNetLiteFeatures
from featx.errors import BackboneError


@dataclass
class Trunk:
    cuts: list[str]
    bottom: Callable[[str], nn.Module]
    top: Callable[[str], nn.Module]
    block: Callable[[str], nn.Module]  # the module a cut's maps enter (forward hooks go there)

    @property
    def default_pool(self) -> str:
        """The cut whose pooled maps `extract --pool auto` stores beside the final features:
        about 70% of the way up, where maps are still spatial but already semantic (measured on
        ELPV and a second dataset with efficientnet_lite0: block11, see benchmarks/accuracy.py)."""
        return self.cuts[min(len(self.cuts) - 1, round(0.7 * (len(self.cuts) + 1)) - 1)]

    def check(self, cut: str, backbone_name: str) -> None:
        if cut not in self.cuts:
            raise BackboneError(f"'{cut}' is not a cut point of {backbone_name} "
                                f"(`featx backbones --cuts {backbone_name}`: {', '.join(self.cuts)})")


class _LiteBottom(nn.Module):
    def __init__(self, net: nn.Module, k: int):
        super().__init__()
        self.net, self.k = net, k

    def forward(self, x):
        x = self.net._swish(self.net._bn0(self.net._conv_stem(x)))
        for block in list(self.net._blocks)[:self.k]:
            x = block(x, drop_connect_rate=None)  # eval: no drop connect below the cut
        return x


class _LiteTop(nn.Module):
    """Blocks k.. + head + pooling, with the library's drop-connect schedule while training."""

    def __init__(self, net: nn.Module, k: int):
        super().__init__()
        self.blocks = nn.ModuleList(list(net._blocks)[k:])
        self.conv_head, self.bn1, self.act = net._conv_head, net._bn1, net._swish
        self.k, self.n, self.rate = k, len(net._blocks), net._global_params.drop_connect_rate

    def forward(self, x):
        for i, block in enumerate(self.blocks, start=self.k):
            rate = self.rate * i / self.n if self.rate and self.training else None
            x = block(x, drop_connect_rate=rate)
        x = self.act(self.bn1(self.conv_head(x)))
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)


def _lite(model: EfficientNetLiteFeatures) -> Trunk:
    n = len(model.net._blocks)
    cuts = [f"block{i}" for i in range(1, n)]
    return Trunk(cuts, lambda c: _LiteBottom(model.net, int(c[5:])), lambda c: _LiteTop(model.net, int(c[5:])),
                 lambda c: model.net._blocks[int(c[5:])])


def _set(root: nn.Module, dotted: str, new: nn.Module) -> None:
    """Replace a (possibly nested) module in `root` without touching the shared originals."""
    parent_name, _, child = dotted.rpartition(".")
    if not parent_name:
        root._modules[child] = new
        return
    parent = root.get_submodule(parent_name)
    clone = copy.copy(parent)
    clone._modules = dict(parent._modules)
    clone._modules[child] = new
    _set(root, parent_name, clone)


def _resnet(model: "torchvision.models.ResNet") -> Trunk:
    # forward = conv1, bn1, relu, maxpool, layer1..4, avgpool, flatten, fc: a plain chain.
    names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    return Trunk(["layer2", "layer3", "layer4"],
                 lambda c: nn.Sequential(*[getattr(model, n) for n in names[:names.index(c)]]),
                 lambda c: _top_without(model, names[:names.index(c)]), lambda c: getattr(model, c))


def _sequential_features(model: nn.Module) -> Trunk:
    # vgg, mobilenet, efficientnet, convnext, densenet...: forward starts with self.features(x).
    names = [f"features.{n}" for n in model.features._modules]

    def below(cut: str) -> list[str]:
        return names[:names.index(cut)]

    return Trunk(names[1:], lambda c: nn.Sequential(*[model.get_submodule(n) for n in below(c)]),
                 lambda c: _top_without(model, below(c)), model.get_submodule)


def _top_without(model: nn.Module, below: list[str]) -> nn.Module:
    """A shallow copy of `model` whose modules `below` the cut are Identity; every other module
    is shared with the backbone, so training the top trains the backbone's own layers."""
    shallow = copy.copy(model)
    shallow._modules = dict(model._modules)
    for name in below:
        _set(shallow, name, nn.Identity())
    return shallow


def _is_resnet(model: nn.Module) -> bool:
    # A model cannot be torchvision's (or a subclass) unless torchvision is loaded: importing it
    # for the check would cost ~3 s (it pulls in torch._dynamo).
    torchvision = sys.modules.get("torchvision")
    return torchvision is not None and isinstance(model, torchvision.models.ResNet)


def trunk_for(model: nn.Module) -> Trunk | None:
    if isinstance(model, EfficientNetLiteFeatures):
        return _lite(model)
    if _is_resnet(model):
        return _resnet(model)
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential) and len(features) > 2:
        return _sequential_features(model)
    return None


def default_pooled(model: nn.Module, input_size: int) -> dict | None:
    """{"block": B, "dim": 2C}: the block whose pooled maps `extract --pool auto` appends to the
    features, and how many columns they add (average + max of its C input channels); None where
    no cut point is known. Runs on the meta device: no weights, no arithmetic (describing only)."""
    trunk = trunk_for(model)
    if trunk is None:
        return None
    block, channels = trunk.default_pool, []
    hook = trunk.block(block).register_forward_pre_hook(lambda _, args: channels.append(args[0].shape[1]))
    try:
        with torch.no_grad():
            model.to("meta").eval()(torch.zeros(1, 3, input_size, input_size, device="meta"))
    finally:
        hook.remove()
    return {"block": block, "dim": 2 * int(channels[-1])}


def cut_table(model: nn.Module, input_size: int) -> list[dict]:
    """Per cut point: map shape and the share of forward FLOPs below the cut (one image)."""
    from torch.utils.flop_counter import FlopCounterMode

    trunk = trunk_for(model)
    if trunk is None:
        return []
    x = torch.zeros(1, 3, input_size, input_size)
    model = model.eval()
    with torch.no_grad():
        with FlopCounterMode(display=False) as total:
            model(x)
        rows = []
        for cut in trunk.cuts:
            with FlopCounterMode(display=False) as below:
                maps = trunk.bottom(cut)(x)
            rows.append({"cut": cut, "shape": tuple(maps.shape[1:]),
                         "bottom_flops": below.get_total_flops() / max(total.get_total_flops(), 1)})
    return rows


class WithMaps(nn.Module):
    """x -> (features, maps entering the cut): what `featx extract --cut` runs."""

    def __init__(self, trunk: Trunk, cut: str):
        super().__init__()
        self.bottom, self.top = trunk.bottom(cut), trunk.top(cut)

    def forward(self, x: torch.Tensor):
        maps = self.bottom(x)
        return self.top(maps), maps


def pool_maps(maps: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 2C): spatial average then maximum (DINOv2's and CLIP's multi-layer
    linear evaluation pool intermediate maps like this)."""
    return torch.cat([maps.mean((2, 3)), maps.amax((2, 3))], 1)


class WithPooled(nn.Module):
    """model(x) with the pooled maps entering one block appended to its features:
    (B, D) -> (B, D + 2C); a (features, maps) output (WithMaps) keeps its maps.

    A forward pre-hook, present only during the forward, catches the block's input, so the
    wrapped model runs unchanged (eager, traced for ONNX, or trained by finetune)."""

    def __init__(self, model: nn.Module, block: nn.Module):
        super().__init__()
        self.model = model
        self._block = (block,)  # a tuple: not registered twice as a submodule (state_dict)

    def forward(self, x: torch.Tensor):
        caught: list[torch.Tensor] = []
        hook = self._block[0].register_forward_pre_hook(lambda _, args: caught.append(args[0]))
        try:
            out = self.model(x)
        finally:
            hook.remove()
        pooled = pool_maps(caught[-1])
        if isinstance(out, tuple):
            return torch.cat([out[0], pooled], 1), out[1]
        return torch.cat([out, pooled], 1)
