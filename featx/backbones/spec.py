"""What a backbone is, without building it: its preprocessing, feature dim and weights.

These dataclasses import no torch, so listing backbones (`featx backbones`) stays instant.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from featx.data.preprocess import Preprocess

if TYPE_CHECKING:
    from torch import nn

__all__ = ["Backbone", "BackboneSpec", "Preprocess", "spec_table"]

SPEC_FILE = "specs.json"  # package data beside this module, made by tools/backbone_specs.py
@dataclass(frozen=True, kw_only=True)
class BackboneSpec:
    """A backbone's card: enough to list it, pick its input transform and size a store."""

    name: str
    feature_dim: int
    preprocess: Preprocess
    family: str = "custom"  # torchvision | packaged | timm | custom
    num_params: int | None = None  # None: counted (on the meta device) the first time it is asked
    # What `extract --pool auto` appends: {"block": "block11", "dim": 224} (average + max of the
    # maps entering that block), or None where no cut point is known; described with num_params.
    pooled: dict | None = None
    default_weights: Path | None = None  # the file used when weights="default", if it is on disk
    weights_hint: str = "pass weights=PATH (a safetensors or torch state-dict file)"

    @property
    def weights_offline(self) -> bool:
        return self.default_weights is not None and Path(self.default_weights).is_file()


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


@lru_cache(maxsize=None)
def spec_table() -> dict:
    """The static specs of the built-in families: {"versions": ..., family: {name: row}}."""
    text = resources.files("featx.backbones").joinpath(SPEC_FILE).read_text(encoding="utf-8")
    return json.loads(text)
