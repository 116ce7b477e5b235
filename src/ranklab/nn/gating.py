"""Gating blocks: MaskNet's instance-guided mask and MaskBlock (Wang et al., DLP-KDD 2021),
FinalMLP's feature gating and multi-head bilinear fusion (Mao et al., AAAI 2023)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ranklab.nn.mlp import MLP


class MaskBlock(nn.Module):
    """MaskNet's MaskBlock (eq. 4-8): an instance-guided mask from the whole embedding,
    V_mask = W2 relu(W1 V_emb) (W1's width: ``reduction_ratio`` x the masked input's width, as in
    FuxiCTR), multiplies the block's input element-wise; then LN(W_h (V_mask * V_in)) -> ReLU
    (-> dropout).

    forward(v_in (B, d_in), v_emb (B, d_emb)) -> (B, out_dim).
    """

    def __init__(
        self,
        in_dim: int,
        emb_dim: int,
        out_dim: int,
        reduction_ratio: float = 1.0,
        dropout: float = 0.0,
        layer_norm: bool = True,
    ) -> None:
        super().__init__()
        hidden = max(1, int(in_dim * reduction_ratio))
        self.mask = nn.Sequential(nn.Linear(emb_dim, hidden), nn.ReLU(), nn.Linear(hidden, in_dim))
        layers: list[nn.Module] = [nn.Linear(in_dim, out_dim, bias=False)]
        if layer_norm:
            layers.append(nn.LayerNorm(out_dim))
        layers.append(nn.ReLU())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        self.hidden = nn.Sequential(*layers)

    def forward(self, v_in: Tensor, v_emb: Tensor) -> Tensor:
        return self.hidden(self.mask(v_emb) * v_in)


class FeatureGating(nn.Module):
    """FinalMLP's feature selection for one stream (eq. 5): gates g = 2 sigmoid(MLP(c)) over the
    flattened embedding, from context c: the embeddings of ``context`` fields, or a learned
    vector when there are none. forward(flat (B, d), context (B, c) or None) -> (B, d)."""

    def __init__(
        self, in_dim: int, context_dim: int, hidden_units: Sequence[int], dim: int
    ) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, dim)) if context_dim == 0 else None
        self.gate = MLP(context_dim or dim, hidden_units, in_dim)

    def forward(self, flat: Tensor, context: Tensor | None) -> Tensor:
        c = self.bias.expand(flat.shape[0], -1) if context is None else context
        return flat * 2 * torch.sigmoid(self.gate(c))


class BilinearFusion(nn.Module):
    """FinalMLP's multi-head bilinear fusion (eq. 7-8): with the two streams' outputs split
    into k heads, y = b + w1.o1 + w2.o2 + sum_h o1_h^T W3_h o2_h.
    forward(o1 (B, d1), o2 (B, d2)) -> (B,)."""

    def __init__(self, dim1: int, dim2: int, num_heads: int = 1) -> None:
        super().__init__()
        if dim1 % num_heads or dim2 % num_heads:
            raise ValueError(f"stream widths {dim1}, {dim2} must divide into {num_heads} heads")
        self.num_heads = num_heads
        self.w1, self.w2 = nn.Linear(dim1, 1), nn.Linear(dim2, 1)
        # initialised as FuxiCTR's (heads * d1/k * d2/k, 1) matrix, then viewed per head
        w3 = torch.empty(num_heads * (dim1 // num_heads) * (dim2 // num_heads), 1)
        nn.init.xavier_normal_(w3)
        self.w3 = nn.Parameter(w3.view(num_heads, dim1 // num_heads, dim2 // num_heads))

    def forward(self, o1: Tensor, o2: Tensor) -> Tensor:
        b = o1.shape[0]
        h1, h2 = o1.view(b, self.num_heads, -1), o2.view(b, self.num_heads, -1)  # (B, k, d/k)
        bilinear = torch.einsum("bhi,hij,bhj->b", h1, self.w3, h2)
        return (self.w1(o1) + self.w2(o2)).squeeze(-1) + bilinear
