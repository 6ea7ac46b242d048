"""H heads computed and optimised as one batched computation: parameters carry a leading head
dimension, and the optimiser applies each head's own learning rate and weight decay, so a sweep
trains exactly what H separate runs would, at the cost of one (DINOv2's linear evaluation idea).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class BatchedHeads(torch.nn.Module):
    """H independent heads (linear or MLP) evaluated together: x [B, D] -> logits [H, B, C]."""

    def __init__(self, num_heads: int, dim: int, num_classes: int, hidden: tuple[int, ...] = (),
                 dropout: float = 0.0, seed: int = 0):
        super().__init__()
        # Every head starts from the same init, so head h of a sweep trains exactly what a
        # single run with its learning rate and weight decay would.
        gen = torch.Generator().manual_seed(seed)
        sizes = [dim, *hidden, num_classes]
        self.weights = torch.nn.ParameterList()
        self.biases = torch.nn.ParameterList()
        for d_in, d_out in zip(sizes[:-1], sizes[1:]):
            if not hidden:  # linear probe: small normal init (DINOv2), zero bias
                w = torch.randn(1, d_in, d_out, generator=gen) * 0.01
            else:  # nn.Linear's default init
                bound = 1 / math.sqrt(d_in)
                w = (torch.rand(1, d_in, d_out, generator=gen) * 2 - 1) * bound
            w = w.repeat(num_heads, 1, 1)
            self.weights.append(torch.nn.Parameter(w))
            self.biases.append(torch.nn.Parameter(torch.zeros(num_heads, d_out)))
        self.dropout = dropout
        self.gen = torch.Generator().manual_seed(seed + 1)  # dropout masks, seeded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.weights) - 1
        h = None
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            if i == 0:  # every head reads the same x: one [B, D] x [D, H*C] product, not H of them
                n_heads, d_in, d_out = w.shape
                h = (x @ w.permute(1, 0, 2).reshape(d_in, n_heads * d_out)).view(len(x), n_heads, d_out)
                h = h.permute(1, 0, 2) + b.unsqueeze(1)  # [H, B, d_out]
            else:
                h = torch.baddbmm(b.unsqueeze(1), h, w)
            if i < last:
                h = F.relu(h)
                if self.training and self.dropout:
                    keep = torch.rand(h.shape, generator=self.gen) >= self.dropout
                    h = h * keep / (1 - self.dropout)
        return h

    def finite(self) -> torch.Tensor:
        """[H] bool: the heads whose parameters are all finite numbers (a too high rate makes
        them inf or NaN)."""
        ok = torch.ones(len(self.weights[0]), dtype=torch.bool)
        for p in self.parameters():
            ok &= torch.isfinite(p.detach()).flatten(1).all(1)
        return ok

    def select(self, index: int) -> dict[str, torch.Tensor]:
        """One head's parameters: layers.{i}.weight [d_in, d_out], layers.{i}.bias [d_out]."""
        out = {}
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            out[f"layers.{i}.weight"] = w[index].detach().clone().contiguous()
            out[f"layers.{i}.bias"] = b[index].detach().clone().contiguous()
        return out


class BatchedOptimizer:
    """SGD (momentum) / Adam / AdamW with a learning rate and weight decay per head.

    Weight decay applies to weights, not biases. Adam's decay is L2 (added to the gradient),
    AdamW's is decoupled, as in torch.optim.
    """

    def __init__(self, heads: BatchedHeads, kind: str, lrs: torch.Tensor, wds: torch.Tensor,
                 momentum: float = 0.9, lookahead: bool = False, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = [(p, True) for p in heads.weights] + [(p, False) for p in heads.biases]
        self.kind, self.lrs, self.wds, self.momentum = kind, lrs, wds, momentum
        self.betas, self.eps, self.steps = betas, eps, 0
        self.state = [{"m": torch.zeros_like(p), "v": torch.zeros_like(p)} for p, _ in self.params]
        self.slow = [p.detach().clone() for p, _ in self.params] if lookahead else None

    @torch.no_grad()
    def step(self, factor: float = 1.0) -> None:
        self.steps += 1
        b1, b2 = self.betas
        for (p, decays), state in zip(self.params, self.state):
            shape = (-1,) + (1,) * (p.dim() - 1)
            lr = (self.lrs * factor).view(shape)
            wd = self.wds.view(shape) if decays else torch.zeros_like(self.wds).view(shape)
            g = p.grad
            if self.kind == "sgd":
                g = g + wd * p
                state["m"].mul_(self.momentum).add_(g)
                p.sub_(lr * state["m"])
                continue
            if self.kind == "adamw":
                p.mul_(1 - lr * wd)
            else:
                g = g + wd * p
            state["m"].mul_(b1).add_(g, alpha=1 - b1)
            state["v"].mul_(b2).addcmul_(g, g, value=1 - b2)
            m_hat = state["m"] / (1 - b1 ** self.steps)
            v_hat = state["v"] / (1 - b2 ** self.steps)
            p.sub_(lr * m_hat / (v_hat.sqrt() + self.eps))
        if self.slow is not None and self.steps % 5 == 0:  # Lookahead: k=5, alpha=0.5
            for (p, _), slow in zip(self.params, self.slow):
                slow.add_(p.detach() - slow, alpha=0.5)
                p.copy_(slow)

    def zero_grad(self) -> None:
        for p, _ in self.params:
            p.grad = None
