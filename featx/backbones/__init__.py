"""Backbone registry: names -> frozen feature networks.

Listing imports no torch (static specs); the built-in families register on the first look-up,
and only `create_backbone` builds a model. A custom backbone is a decorated factory:

    @register_backbone("my_net", feature_dim=512, input_size=224)
    def my_net(weights):            # None: random init; else the Path of a weights file
        net = build_my_net_without_classifier()
        return net if weights is None else load_weights(net, weights)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from featx.runtime.lazy import lazy_names

# The public names, listed once, loaded on first use: the torch-free tables (families) can be
# imported without the registry, its specs and the data package beneath them.
if TYPE_CHECKING:
    from featx.backbones.registry import (BackboneEntry, create_backbone, get_spec, list_backbones,
                                          register_backbone)
    from featx.backbones.spec import Backbone, BackboneSpec, Preprocess
    from featx.backbones.weights import load_weights

__getattr__, __dir__, __all__ = lazy_names(__name__, __file__)
