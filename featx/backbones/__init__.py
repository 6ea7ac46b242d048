"""Backbone registry; importing this package files every family's entries."""

from featx.backbones import efficientnet_lite, timm_zoo, torchvision_zoo  # noqa: F401 (registers)
from featx.backbones.registry import (
    Backbone,
    BackboneEntry,
    BackboneSpec,
    Preprocess,
    create_backbone,
    get_spec,
    list_backbones,
    register_backbone,
)

__all__ = ["Backbone", "BackboneEntry", "BackboneSpec", "Preprocess", "create_backbone",
           "get_spec", "list_backbones", "register_backbone"]
