"""Every torchvision classification model, its classifier removed, with its weights' transforms.

Default weights come from the torch hub cache (where torchvision's own download puts them), so
a machine without internet uses them when they were copied there; otherwise `--weights PATH`.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torchvision.models import get_model, get_model_weights, list_models

from featx.backbones.registry import (
    BackboneEntry,
    BackboneSpec,
    Preprocess,
    count_parameters,
    last_linear,
    parameters_on_meta,
    register_backbone,
    replace_module,
    seeded_init,
    weights_missing_error,
)
from featx.backbones.weights import fit_state_dict, load_state_dict, sha256_file


def _full_model(name: str) -> nn.Module:
    with warnings.catch_warnings():  # googlenet/inception warn about their init scheme
        warnings.simplefilter("ignore", FutureWarning)
        kwargs = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
        return get_model(name, weights=None, **kwargs)


def _strip_classifier(model: nn.Module) -> tuple[nn.Module, str, int]:
    """Replace the ImageNet classifier with Identity: (model, classifier name, feature dim)."""
    if isinstance(model, torchvision.models.SqueezeNet):
        # SqueezeNet classifies with a 1x1 conv; its pooled 512-d input is the feature.
        model.classifier = nn.AdaptiveAvgPool2d(1)
        return model, "classifier", 512
    found = last_linear(model)
    assert found is not None, f"{type(model).__name__} has no Linear classifier"
    name, linear = found
    replace_module(model, name, nn.Identity())
    return model, name, linear.in_features


def _default_weights(name: str):
    return get_model_weights(name).DEFAULT


def _hub_cache_file(name: str) -> Path:
    url = _default_weights(name).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _preprocess(name: str) -> Preprocess:
    t = _default_weights(name).transforms()
    return Preprocess(
        input_size=int(t.crop_size[0]),
        resize_size=int(t.resize_size[0]),
        mean=tuple(float(x) for x in t.mean),
        std=tuple(float(x) for x in t.std),
        interpolation=t.interpolation.value,
    )


def _describe(name: str) -> BackboneSpec:
    with parameters_on_meta():
        model = _full_model(name)
    num_params = count_parameters(model)
    _, _, dim = _strip_classifier(model)
    url = _default_weights(name).url
    return BackboneSpec(
        name=name, family="torchvision", feature_dim=dim, num_params=num_params,
        preprocess=_preprocess(name), default_weights=_hub_cache_file(name),
        weights_hint=f"download {url} and put it in {_hub_cache_file(name).parent}",
    )


def _build(name: str, weights: str | Path, seed: int) -> tuple[nn.Module, dict]:
    model = seeded_init(seed, lambda: _full_model(name))
    if str(weights) == "none":
        provenance = {"source": f"random-init(seed={seed})"}
    else:
        path = _hub_cache_file(name) if str(weights) == "default" else Path(weights)
        if not path.is_file():
            raise weights_missing_error(name, path, f"download {_default_weights(name).url}")
        classifier = _classifier_name(name)
        fit_state_dict(model, load_state_dict(path), name, str(path), optional_prefix=classifier)
        provenance = {"source": str(path), "sha256": sha256_file(path)}
    model, _, _ = _strip_classifier(model)
    return model, provenance


def _classifier_name(name: str) -> str:
    with parameters_on_meta():
        model = _full_model(name)
    if isinstance(model, torchvision.models.SqueezeNet):
        return "classifier"
    return last_linear(model)[0]


def _register_all() -> None:
    for name in list_models(module=torchvision.models):
        register_backbone(BackboneEntry(
            name=name, family="torchvision",
            describe=lambda n=name: _describe(n),
            build=lambda w, s, n=name: _build(n, w, s),
        ))


_register_all()
