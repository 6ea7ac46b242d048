"""Backbone registry: names -> frozen feature networks.

Listing imports no torch (static specs); the built-in families register on the first look-up,
and only `create_backbone` builds a model. A custom backbone is a decorated factory:

    @register_backbone("my_net", feature_dim=512, input_size=224)
    def my_net(weights):            # None: random init; else the Path of a weights file
        net = build_my_net_without_classifier()
        return net if weights is None else load_weights(net, weights)
"""

from featx.backbones.registry import (
    BackboneEntry,
    create_backbone,
    get_spec,
    list_backbones,
    register_backbone,
)
from featx.backbones.spec import Backbone, BackboneSpec, Preprocess

__all__ = ["Backbone", "BackboneEntry", "BackboneSpec", "Preprocess", "create_backbone",
           "get_spec", "list_backbones", "load_weights", "register_backbone"]


def __getattr__(name: str):
    # load_weights needs torch: imported on first use, so listing backbones stays torch-free.
    if name == "load_weights":
        from featx.backbones.weights import load_weights

        return load_weights
    raise AttributeError(f"module 'featx.backbones' has no attribute '{name}'")
