"""Every torchvision classification model, its classifier removed, with its weights' transforms.

Names and specs come from specs.json (made by tools/backbone_specs.py from the installed
torchvision), so listing them builds nothing and imports no torch. Default weights come from the
torch hub cache (where torchvision's own download puts them), so a machine without internet uses
them when they were copied there; otherwise `--weights PATH`.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from featx.backbones.registry import BackboneEntry, register_family, weights_missing_error
from featx.backbones.spec import BackboneSpec, Preprocess, spec_table
from featx.errors import BackboneError

if TYPE_CHECKING:
    from torch import nn

FAMILY = "torchvision"
SPEC_SCRIPT = "tools/backbone_specs.py"


def hub_dir() -> Path:
    """torch.hub.get_dir() without importing torch: $TORCH_HOME/hub, else ~/.cache/torch/hub.

    Once torch is imported, its own answer wins (it honours torch.hub.set_dir).
    """
    hub = sys.modules.get("torch.hub")
    if hub is not None:
        return Path(hub.get_dir())
    cache = os.getenv("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    return Path(os.path.expanduser(os.getenv("TORCH_HOME", os.path.join(cache, "torch")))) / "hub"


def hub_cache_file(url: str) -> Path:
    return hub_dir() / "checkpoints" / os.path.basename(urlparse(url).path)


def _spec(name: str, row: dict) -> BackboneSpec:
    pre = row["preprocess"]
    preprocess = Preprocess(input_size=pre["input_size"], resize_size=pre["resize_size"],
                            mean=tuple(pre["mean"]), std=tuple(pre["std"]),
                            interpolation=pre["interpolation"])
    cached = hub_cache_file(row["weights_url"])
    return BackboneSpec(name=name, family=FAMILY, feature_dim=row["feature_dim"],
                        num_params=row["num_params"], pooled=row.get("pooled"), preprocess=preprocess,
                        default_weights=cached,
                        weights_hint=f"download {row['weights_url']} and put it in {cached.parent}")


# --- building (torch from here on) -------------------------------------------------------------

def full_model(name: str) -> nn.Module:
    """The ImageNet classifier `name`, random init (torch's global RNG)."""
    from torchvision.models import get_model

    with warnings.catch_warnings():  # googlenet/inception warn about their init scheme
        warnings.simplefilter("ignore", FutureWarning)
        kwargs = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
        try:
            return get_model(name, weights=None, **kwargs)
        except ValueError as exc:  # the table names a model this torchvision lacks
            raise BackboneError(f"{name}: not in the installed torchvision ({exc}); "
                                f"regenerate the table with {SPEC_SCRIPT}") from None


def strip_classifier(model: nn.Module) -> tuple[nn.Module, str, int]:
    """Replace the ImageNet classifier with Identity: (model, classifier name, feature dim)."""
    import torchvision
    from torch import nn

    from featx.backbones.modules import last_linear, replace_module

    if isinstance(model, torchvision.models.SqueezeNet):
        # SqueezeNet classifies with a 1x1 conv; its pooled 512-d input is the feature.
        model.classifier = nn.AdaptiveAvgPool2d(1)
        return model, "classifier", 512
    found = last_linear(model)
    assert found is not None, f"{type(model).__name__} has no Linear classifier"
    name, linear = found
    replace_module(model, name, nn.Identity())
    return model, name, linear.in_features


def describe_model(name: str) -> dict:
    """One row of specs.json, from a model built on the meta device (tools/backbone_specs.py)."""
    from torchvision.models import get_model_weights

    from featx.backbones.modules import count_parameters, parameters_on_meta

    with parameters_on_meta():
        model = full_model(name)
    num_params = count_parameters(model)
    features, classifier, dim = strip_classifier(model)
    weights = get_model_weights(name).DEFAULT
    t = weights.transforms()
    from featx.backbones.cuts import default_pooled

    return {"feature_dim": dim, "num_params": num_params, "classifier": classifier,
            "pooled": default_pooled(features, int(t.crop_size[0])),
            "weights_url": weights.url,
            "preprocess": {"input_size": int(t.crop_size[0]), "resize_size": int(t.resize_size[0]),
                           "mean": [float(x) for x in t.mean], "std": [float(x) for x in t.std],
                           "interpolation": t.interpolation.value}}


def _build(name: str, row: dict, weights: str | Path, seed: int) -> tuple[nn.Module, dict]:
    from featx.backbones.modules import seeded_init
    from featx.backbones.weights import fit_state_dict, load_state_dict, sha256_file

    model = seeded_init(seed, lambda: full_model(name))
    if str(weights) == "none":
        provenance = {"source": f"random-init(seed={seed})"}
    else:
        path = hub_cache_file(row["weights_url"]) if str(weights) == "default" else Path(weights)
        if not path.is_file():
            raise weights_missing_error(name, path, f"download {row['weights_url']}")
        fit_state_dict(model, load_state_dict(path), name, str(path), optional_prefix=row["classifier"])
        provenance = {"source": str(path), "sha256": sha256_file(path)}
    model, _, dim = strip_classifier(model)
    if dim != row["feature_dim"]:
        raise BackboneError(f"{name}: the spec table says {row['feature_dim']} features, the installed "
                            f"torchvision gives {dim}; regenerate the table with {SPEC_SCRIPT}")
    return model, provenance


def _entries() -> list[BackboneEntry]:
    rows = spec_table()[FAMILY]
    return [BackboneEntry(name=name, family=FAMILY,
                          describe=lambda n=name, r=row: _spec(n, r),
                          build=lambda w, s, n=name, r=row: _build(n, r, w, s))
            for name, row in rows.items()]


register_family(_entries())
