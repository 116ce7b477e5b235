"""Feature-interaction blocks: factorization machine and cross networks (DCN, DCNv2, DCN-Mix)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class FMInteraction(nn.Module):
    """Second-order FM term: sum over field pairs i<j of <e_i, e_j>.

    (B, F, D) -> (B,), computed as 0.5 * sum_d[(sum_f e)^2 - sum_f e^2] (Rendle, 2010, eq. 5).
    """

    def forward(self, emb: Tensor) -> Tensor:
        square_of_sum = emb.sum(dim=1).pow(2)  # (B, D)
        sum_of_square = emb.pow(2).sum(dim=1)  # (B, D)
        return 0.5 * (square_of_sum - sum_of_square).sum(dim=1)  # (B,)


class CrossNet(nn.Module):
    """DCN cross network (Wang et al., 2017): x_{l+1} = x_0 * (x_l . w_l) + b_l + x_l.

    (B, d) -> (B, d). Each layer adds one degree of feature crossing with 2d parameters.
    """

    def __init__(self, dim: int, n_layers: int) -> None:
        super().__init__()
        self.w = nn.ParameterList(nn.Parameter(torch.empty(dim)) for _ in range(n_layers))
        self.b = nn.ParameterList(nn.Parameter(torch.zeros(dim)) for _ in range(n_layers))
        for w in self.w:
            nn.init.normal_(w, std=dim**-0.5)

    def forward(self, x0: Tensor) -> Tensor:
        x = x0
        for w, b in zip(self.w, self.b):
            x = x0 * (x @ w).unsqueeze(1) + b + x  # (B, d)
        return x


class CrossNetV2(nn.Module):
    """DCNv2 cross network (Wang et al., 2021, eq. 1): x_{l+1} = x_0 * (W_l x_l + b_l) + x_l.

    (B, d) -> (B, d), with a full d x d matrix per layer.
    """

    def __init__(self, dim: int, n_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n_layers))
        for lin in self.layers:
            nn.init.xavier_normal_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, x0: Tensor) -> Tensor:
        x = x0
        for lin in self.layers:
            x = x0 * lin(x) + x  # (B, d)
        return x


class CrossNetMix(nn.Module):
    """DCNv2's low-rank mixture of cross experts (DCN-Mix, Wang et al., 2021, eq. 3).

    Expert i: E_i(x_l) = x_0 * (U_i g(C_i g(V_i^T x_l)) + b); layer output
    x_{l+1} = sum_i G_i(x_l) E_i(x_l) + x_l with a softmax gate G over experts and g = tanh.
    (B, d) -> (B, d); each expert costs 2dr + r^2 parameters instead of d^2.
    """

    def __init__(self, dim: int, n_layers: int, rank: int, n_experts: int) -> None:
        super().__init__()
        self.n_layers = n_layers
        self.U = nn.ParameterList(
            nn.Parameter(torch.empty(n_experts, dim, rank)) for _ in range(n_layers)
        )
        self.V = nn.ParameterList(
            nn.Parameter(torch.empty(n_experts, dim, rank)) for _ in range(n_layers)
        )
        self.C = nn.ParameterList(
            nn.Parameter(torch.empty(n_experts, rank, rank)) for _ in range(n_layers)
        )
        self.b = nn.ParameterList(nn.Parameter(torch.zeros(dim)) for _ in range(n_layers))
        self.gates = nn.ModuleList(nn.Linear(dim, 1, bias=False) for _ in range(n_experts))
        for p in [*self.U, *self.V, *self.C]:
            nn.init.xavier_normal_(p)

    def forward(self, x0: Tensor) -> Tensor:
        x = x0
        for U, V, C, b in zip(self.U, self.V, self.C, self.b):
            v = torch.tanh(torch.einsum("bd,edr->ber", x, V))  # (B, E, r)
            v = torch.tanh(torch.einsum("ber,esr->bes", v, C))  # (B, E, r): C_i @ v_i
            u = torch.einsum("bes,eds->bed", v, U)  # (B, E, d)
            experts = x0.unsqueeze(1) * (u + b)  # (B, E, d)
            gate = torch.softmax(torch.cat([g(x) for g in self.gates], dim=1), dim=1)  # (B, E)
            x = (gate.unsqueeze(-1) * experts).sum(1) + x  # (B, d)
        return x
