"""`tiny_cnn`: a random-init backbone for tests of the machinery (extract, stores, heads,
finetune) that builds and runs in milliseconds. conftest.py imports it; a subprocess sees it
with FEATX_BACKBONE_MODULES=tests.tiny_backbone (and the repository root on PYTHONPATH)."""

from __future__ import annotations

from featx.backbones import load_weights, register_backbone


@register_backbone("tiny_cnn", feature_dim=16, input_size=32)
def tiny_cnn(weights):
    from torch import nn

    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten())  # (B, 16)
    return net if weights is None else load_weights(net, weights)


def subprocess_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """os.environ (or `env`) plus what a subprocess needs to find tiny_cnn."""
    import os
    from pathlib import Path

    env = dict(os.environ if env is None else env)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env["FEATX_BACKBONE_MODULES"] = "tests.tiny_backbone"
    return env


@register_backbone("tiny_features", feature_dim=16, input_size=32)
def tiny_features(weights):
    """tiny_cnn with known cut points (a `features` chain, as torchvision's VGG/MobileNet): for
    extract --cut/--pool and finetune --from-block machinery."""
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(12, 16, 3, padding=1), nn.ReLU())
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

        def forward(self, x):
            return self.pool(self.features(x))

    net = Net()
    return net if weights is None else load_weights(net, weights)
