"""Self-attention over fields (AutoInt, Song et al., CIKM 2019)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class FieldSelfAttention(nn.Module):
    """AutoInt's interacting layer (eq. 5-8): per head h, field m attends to every field k with
    weights softmax_k(<W_Q^h e_m, W_K^h e_k>) (divided by sqrt(head width) with ``scale``); its
    output is the weighted sum of W_V^h e_k (the weights through ``dropout``); the heads are
    concatenated, a residual added (``residual``: W_Res e_m, or e_m itself where the widths
    already match, as in FuxiCTR), layer-normalised (``layer_norm``), then ReLU, in FuxiCTR's
    order. ``dim`` is the width of all heads together, as FuxiCTR's
    ``attention_dim`` (each head gets dim / num_heads).

    (B, F, d_in) -> (B, F, dim).
    """

    def __init__(
        self,
        in_dim: int,
        dim: int,
        num_heads: int = 2,
        residual: bool = True,
        scale: bool = False,
        layer_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} must divide into {num_heads} heads")
        self.num_heads, self.head_dim, self.scale = num_heads, dim // num_heads, scale
        self.query = nn.Linear(in_dim, dim, bias=False)
        self.key = nn.Linear(in_dim, dim, bias=False)
        self.value = nn.Linear(in_dim, dim, bias=False)
        self.use_residual = residual
        self.residual = nn.Linear(in_dim, dim, bias=False) if residual and in_dim != dim else None
        self.norm = nn.LayerNorm(dim) if layer_norm else None
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.out_dim = dim

    def forward(self, x: Tensor) -> Tensor:
        b, f, _ = x.shape
        split = lambda t: t.view(b, f, self.num_heads, self.head_dim).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))  # (B, H, F, dh)
        scores = q @ k.transpose(-1, -2)  # (B, H, F, F)
        if self.scale:
            scores = scores / self.head_dim**0.5
        weights = torch.softmax(scores, dim=-1)
        if self.dropout is not None:
            weights = self.dropout(weights)
        out = (weights @ v).transpose(1, 2).reshape(b, f, -1)  # (B, F, dim)
        if self.use_residual:
            out = out + (self.residual(x) if self.residual is not None else x)
        if self.norm is not None:
            out = self.norm(out)
        return torch.relu(out)
