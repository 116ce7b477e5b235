"""Multi-layer perceptron block."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class Dice(nn.Module):
    """Data-adaptive activation (DIN, Zhou et al., 2018, eq. 9), per channel over the last dim.

    f(s) = p(s) * s + (1 - p(s)) * alpha * s,   p(s) = sigmoid((s - E[s]) / sqrt(Var[s] + eps)),

    with E and Var the batch statistics over all leading dimensions in training (biased
    variance) and their running averages in evaluation, as batch normalisation keeps them (and
    in training on fewer than two rows, which have no variance).
    (..., D) -> (..., D); alpha starts at 0.
    """

    def __init__(self, dim: int, eps: float = 1e-8, momentum: float = 0.1) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, eps=eps, momentum=momentum, affine=False)
        self.alpha = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, x.shape[-1])  # (N, D)
        if self.training and flat.shape[0] < 2:
            # one value has no batch variance (batch norm refuses it in training; DIN's unit
            # passes the valid history steps only, possibly one or none): running statistics
            n = self.norm
            z = F.batch_norm(flat, n.running_mean, n.running_var, training=False, eps=n.eps)
        else:
            z = self.norm(flat)
        p = torch.sigmoid(z).view_as(x)  # (..., D)
        return p * x + (1 - p) * self.alpha * x


ACTIVATIONS = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "prelu": nn.PReLU,
    "silu": nn.SiLU,
}
WIDTH_ACTIVATIONS = {"dice": Dice}  # these need the layer's width


def activation(name: str, width: int | None = None) -> nn.Module:
    """An activation module by name; ``dice`` needs ``width`` (the channels it normalises)."""
    key = name.lower()
    if key in WIDTH_ACTIVATIONS:
        if width is None:
            raise ValueError(f"activation '{name}' needs the layer width")
        return WIDTH_ACTIVATIONS[key](width)
    try:
        return ACTIVATIONS[key]()
    except KeyError:
        known = sorted([*ACTIVATIONS, *WIDTH_ACTIVATIONS])
        raise ValueError(f"unknown activation '{name}' (known: {known})") from None


class MLP(nn.Sequential):
    """(B, in_dim) -> (B, out_dim or hidden[-1]).

    Each hidden layer is Linear -> [BatchNorm] -> activation -> [Dropout], as in FuxiCTR's
    MLP block; an optional final Linear maps to ``out_dim``. Linear weights use Xavier-normal
    initialisation and zero biases. ``act="dice"`` gives each hidden layer a ``Dice`` of its
    width; batch norm and Dice need 2-D input, other activations any (..., in_dim).
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        out_dim: int | None = None,
        dropout: float = 0.0,
        batch_norm: bool = False,
        act: str = "relu",
    ) -> None:
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers.append(nn.Linear(d, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(activation(act, h))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            d = h
        if out_dim is not None:
            layers.append(nn.Linear(d, out_dim))
            d = out_dim
        super().__init__(*layers)
        self.out_dim = d
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x)
