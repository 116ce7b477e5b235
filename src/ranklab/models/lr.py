"""Logistic regression: the first-order baseline."""

from __future__ import annotations

from torch import Tensor, nn

from ranklab.data.schema import Schema
from ranklab.nn import LinearTerm


class LR(nn.Module):
    """logit = b + sum_f w_f[x_f] + sum_j w_j x_j.  features -> (B,)."""

    def __init__(self, schema: Schema, init_std: float = 1e-4) -> None:
        super().__init__()
        self.linear = LinearTerm(schema, init_std=init_std)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        return self.linear(features)
