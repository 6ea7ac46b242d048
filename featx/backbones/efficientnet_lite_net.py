"""The EfficientNet-Lite feature network: the classifier-free model that featx runs."""

from __future__ import annotations

from torch import nn


class EfficientNetLiteFeatures(nn.Module):
    """The network up to global average pooling: (B, 3, H, W) -> (B, 1280)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net._avg_pooling(self.net.extract_features(x)).flatten(1)


def architecture(name: str) -> nn.Module:
    """The full efficientnet-lite-pytorch network `name` (e.g. "efficientnet_lite0"), random init."""
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name(name.replace("_", "-"))
