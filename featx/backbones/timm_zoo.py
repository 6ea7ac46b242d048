"""timm models as `timm/<name>`, registered only when timm is installed (`featx[timm]`).

The registry imports this module only when a 'timm/' name or family="timm" is asked for:
importing timm costs seconds. Names are listed without building anything; a model is built on
the meta device when its spec is first asked for (timm keeps no static feature dims).
Pretrained weights come from the Hugging Face cache (offline mode: never a download at run
time); `--weights PATH` loads a local file instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from featx.backbones.registry import TIMM_PREFIX, BackboneEntry, register_family, weights_missing_error
from featx.backbones.spec import BackboneSpec, Preprocess

if TYPE_CHECKING:
    from torch import nn

FAMILY = "timm"


def _create(name: str, pretrained: bool = False) -> nn.Module:
    import timm

    return timm.create_model(name, pretrained=pretrained)


def _preprocess(model: nn.Module) -> Preprocess:
    import timm.data

    cfg = timm.data.resolve_data_config({}, model=model)
    size = int(cfg["input_size"][-1])
    return Preprocess(
        input_size=size, resize_size=int(round(size / cfg.get("crop_pct", 0.875))),
        mean=tuple(float(x) for x in cfg["mean"]), std=tuple(float(x) for x in cfg["std"]),
        interpolation=str(cfg.get("interpolation", "bilinear")),
    )


def _describe(name: str) -> BackboneSpec:
    from featx.backbones.modules import count_parameters, parameters_on_meta

    try:
        with parameters_on_meta():
            model = _create(name)
    except (NotImplementedError, RuntimeError):
        # A few models (swin v2, ...) fill buffers from parameters at construction time.
        model = _create(name)
    return BackboneSpec(
        name=TIMM_PREFIX + name, family=FAMILY, feature_dim=int(model.num_features),
        num_params=count_parameters(model), preprocess=_preprocess(model),
        weights_hint="put the model in the Hugging Face cache (HF_HOME) on a connected machine",
    )


def _build(name: str, weights: str | Path, seed: int) -> tuple[nn.Module, dict]:
    from featx.backbones.modules import seeded_init
    from featx.backbones.weights import fit_state_dict, load_state_dict, sha256_file, sha256_state_dict

    if str(weights) == "default":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a cache hit or a clear error, never a hang
        try:
            model = _create(name, pretrained=True)
        except Exception as exc:  # noqa: BLE001 - hub/cache errors come in many types
            raise weights_missing_error(TIMM_PREFIX + name, None, f"not in the Hugging Face cache "
                                        f"({type(exc).__name__})") from None
        provenance = {"source": f"timm pretrained ({name})",
                      "sha256": sha256_state_dict(model.state_dict())}
    else:
        model = seeded_init(seed, lambda: _create(name))
        if str(weights) == "none":
            provenance = {"source": f"random-init(seed={seed})"}
        else:
            head = model.default_cfg.get("classifier", "head")
            fit_state_dict(model, load_state_dict(weights), TIMM_PREFIX + name, str(weights),
                           optional_prefix=head if isinstance(head, str) else None)
            provenance = {"source": str(weights), "sha256": sha256_file(weights)}
    model.reset_classifier(0)  # pooled penultimate features
    return model, provenance


def _entries() -> list[BackboneEntry]:
    try:
        import timm
    except ImportError:
        return []
    return [BackboneEntry(name=TIMM_PREFIX + name, family=FAMILY,
                          describe=lambda n=name: _describe(n),
                          build=lambda w, s, n=name: _build(n, w, s))
            for name in timm.list_models()]


register_family(_entries())
