"""The network a fine-tune trains: a backbone (or its top blocks) + the warm-start head as torch layers.

    net = Network(backbone.model, HeadModule(Head.load("heads/lin")))
    groups = layer_groups(net.backbone, 3)      # bottom -> top, for discriminative rates
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from featx.errors import FeatxError
from featx.heads.scoring import scale_constant_features
from featx.heads.io import Head
from featx.heads.kinds import head_kind


class HeadModule(torch.nn.Module):
    """A saved linear/MLP head (with its feature standardisation) as trainable torch layers."""

    def __init__(self, head: Head):
        super().__init__()
        if head_kind(head.kind).needs_reference_set:
            raise FeatxError(f"{head.path}: a k-NN head has no weights to fine-tune from; "
                             "train a linear head (featx train-head --kind linear)")
        prefix = head.warm_start_prefix  # a k-fold head: its refit on train only (val stays unseen)
        norm = head.normalizer(prefix)
        dim = head.feature_dim
        mean = norm.mean if norm.mode == "standard" else np.zeros(dim, np.float32)
        std = norm.std if norm.mode == "standard" else np.ones(dim, np.float32)
        mean, std = np.asarray(mean, np.float32), np.array(std, np.float32)
        # Heads from before train-head scaled constant features (scale_constant_features) have a
        # std of 1e-6 on them and a weight no data ever tested: once fine-tuning moves such a
        # feature a little, (x - mean) / std explodes (ELPV lite0: one weight of 12, train loss 23
        # in epoch 1). They start from a zero weight and a typical std; on the training set
        # nothing changes.
        scaled = scale_constant_features(std).astype(np.float32)
        constant, std = scaled != std, scaled
        self.register_buffer("mean", torch.from_numpy(mean))  # (D,)
        self.register_buffer("std", torch.from_numpy(std))  # (D,)
        self.l2 = norm.mode == "l2"
        n = sum(1 for k in head.tensors if k.startswith(f"{prefix}layers.") and k.endswith(".weight"))
        self.layers = torch.nn.ModuleList()
        for i in range(n):
            w = head.tensors[f"{prefix}layers.{i}.weight"].copy()  # (d_in, d_out)
            b = head.tensors[f"{prefix}layers.{i}.bias"]
            if i == n - 1:  # the head's temperature folded in: the network starts from its probabilities
                w, b = w / head.meta.temperature, b / head.meta.temperature
            if i == 0 and not self.l2:
                w[constant] = 0.0
            layer = torch.nn.Linear(w.shape[0], w.shape[1])
            with torch.no_grad():
                layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T)))
                layer.bias.copy_(torch.from_numpy(b))
            self.layers.append(layer)
        dropout = head.meta.config.get("dropout", 0.0) if n > 1 else 0.0
        self.dropout = torch.nn.Dropout(dropout)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = F.normalize(features, dim=1) if self.l2 else (features - self.mean) / self.std  # (B, D)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = self.dropout(F.relu(x))
        return x  # (B, classes)

    def tensors(self) -> dict[str, np.ndarray]:
        """In featx head layout: layers.{i}.weight [d_in, d_out], norm.mean/std."""
        out = {f"layers.{i}.weight": l.weight.detach().cpu().T.contiguous().numpy()
               for i, l in enumerate(self.layers)}
        out.update({f"layers.{i}.bias": l.bias.detach().cpu().numpy() for i, l in enumerate(self.layers)})
        if not self.l2:
            out.update({"norm.mean": self.mean.cpu().numpy(), "norm.std": self.std.cpu().numpy()})
        return out


def head_columns(model: torch.nn.Module, head: Head) -> torch.nn.Module:
    """`model` (a whole backbone) computing the columns `head` takes: with the pooled maps of its
    block appended when the head was trained on `extract --pool` features."""
    if not head.meta.pool:
        return model
    from featx.backbones.cuts import WithPooled, trunk_for

    return WithPooled(model, trunk_for(model).block(head.meta.pool))


class Network(torch.nn.Module):
    """backbone (features) -> head (logits)."""

    def __init__(self, backbone: torch.nn.Module, head: HeadModule):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def layer_groups(backbone: torch.nn.Module, groups: int) -> list[list[torch.nn.Parameter]]:
    """Backbone parameters split bottom -> top into `groups` runs of (about) equal size."""
    params = [p for p in backbone.parameters()]
    sizes = np.cumsum([p.numel() for p in params])
    bounds = sizes[-1] * np.arange(1, groups) / groups if len(params) else []
    which = np.searchsorted(bounds, sizes, side="left")
    return [[p for p, w in zip(params, which) if w == g] for g in range(groups)]


def set_train_mode(net: Network, head_only: bool, train_bn: bool) -> None:
    """Train mode; with `head_only` the backbone is frozen. Batch-norm layers keep their
    pretrained statistics unless `train_bn` (and always while only the head trains)."""
    net.train()
    for p in net.backbone.parameters():
        p.requires_grad_(not head_only)
    for module in net.backbone.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and (head_only or not train_bn):
            module.eval()  # small fine-tuning batches are noisier than the pretrained statistics
