"""Feature-interaction blocks: factorization machine, cross networks (DCN, DCNv2, DCN-Mix), CIN
(xDeepFM), SENET and bilinear interaction (FiBiNET), pairwise dot products (DLRM)."""

from __future__ import annotations

from collections.abc import Sequence

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


class CIN(nn.Module):
    """Compressed interaction network (xDeepFM, Lian et al., KDD 2018, eq. 6).

    Layer k: X^k[h, :] = sum_{i, j} W^k[h, i, j] (X^{k-1}[i, :] * X^0[j, :]) + b^k[h], for the
    H_k feature maps of width D; each layer's maps are sum-pooled over D and the pools of all
    layers concatenated ("direct" connections). (B, F, D) -> (B, sum_k H_k).
    """

    def __init__(self, num_fields: int, layer_sizes: Sequence[int]) -> None:
        super().__init__()
        sizes = [num_fields, *layer_sizes]
        # a 1x1 convolution over the (H_{k-1} * F) channel products, as in the authors' code
        self.layers = nn.ModuleList(
            nn.Conv1d(sizes[k] * num_fields, sizes[k + 1], kernel_size=1)
            for k in range(len(layer_sizes))
        )
        self.out_dim = int(sum(layer_sizes))

    def forward(self, x0: Tensor) -> Tensor:
        b, _, d = x0.shape  # (B, F, D)
        x, pools = x0, []
        for conv in self.layers:
            z = torch.einsum("bhd,bmd->bhmd", x, x0).reshape(b, -1, d)  # (B, H*F, D)
            x = conv(z)  # (B, H_k, D)
            pools.append(x.sum(dim=-1))  # (B, H_k)
        return torch.cat(pools, dim=1)


class SENet(nn.Module):
    """Squeeze-and-excitation over fields (FiBiNET, Huang et al., RecSys 2019, eq. 3-5):
    z_f = mean_d e_f; a = relu(W2 relu(W1 z)), W1 (F/r x F), W2 (F x F/r); e'_f = a_f e_f.
    W1 and W2 start Xavier-normal, as FuxiCTR initialises every linear layer of the model.
    (B, F, D) -> (B, F, D)."""

    def __init__(self, num_fields: int, reduction_ratio: float = 3.0) -> None:
        super().__init__()
        reduced = max(1, int(num_fields / reduction_ratio))
        self.excitation = nn.Sequential(
            nn.Linear(num_fields, reduced, bias=False),
            nn.ReLU(),
            nn.Linear(reduced, num_fields, bias=False),
            nn.ReLU(),
        )
        for layer in self.excitation[::2]:
            nn.init.xavier_normal_(layer.weight)

    def forward(self, emb: Tensor) -> Tensor:
        weights = self.excitation(emb.mean(dim=-1))  # (B, F)
        return emb * weights.unsqueeze(-1)


BILINEAR_TYPES = ("field_all", "field_each", "field_interaction")


class BilinearInteraction(nn.Module):
    """FiBiNET's bilinear interaction (eq. 6-8): p_ij = (v_i W) * v_j for every pair i < j, with
    one W (D x D) for all pairs (``field_all``), one per field i (``field_each``) or one per pair
    (``field_interaction``). Each D x D matrix starts Xavier-normal on its own (std sqrt(1/D)),
    as one ``nn.Linear(D, D)`` would. (B, F, D) -> (B, F(F-1)/2, D)."""

    def __init__(self, num_fields: int, dim: int, kind: str = "field_interaction") -> None:
        super().__init__()
        if kind not in BILINEAR_TYPES:
            raise ValueError(f"bilinear type must be one of {BILINEAR_TYPES}, got '{kind}'")
        self.kind = kind
        pairs = torch.triu_indices(num_fields, num_fields, offset=1)  # (2, P)
        self.register_buffer("left", pairs[0], persistent=False)
        self.register_buffer("right", pairs[1], persistent=False)
        n = {"field_all": 1, "field_each": num_fields, "field_interaction": pairs.shape[1]}[kind]
        self.weight = nn.Parameter(torch.empty(n, dim, dim))
        for w in self.weight.data:  # not the (n, D, D) tensor at once: its fans would mix n in
            nn.init.xavier_normal_(w)

    def forward(self, emb: Tensor) -> Tensor:
        vi, vj = emb[:, self.left], emb[:, self.right]  # (B, P, D) each
        if self.kind == "field_all":
            return (vi @ self.weight[0]) * vj
        w = self.weight[self.left] if self.kind == "field_each" else self.weight  # (P, D, D)
        return torch.einsum("bpd,pde->bpe", vi, w) * vj


class DotInteraction(nn.Module):
    """DLRM's interaction (Naumov et al., 2019): the dot products of every pair of the F
    vectors (dense vector and embeddings), i < j. (B, F, D) -> (B, F(F-1)/2)."""

    def __init__(self, num_vectors: int) -> None:
        super().__init__()
        pairs = torch.triu_indices(num_vectors, num_vectors, offset=1)
        self.register_buffer("left", pairs[0], persistent=False)
        self.register_buffer("right", pairs[1], persistent=False)
        self.out_dim = int(pairs.shape[1])

    def forward(self, vectors: Tensor) -> Tensor:
        gram = vectors @ vectors.transpose(1, 2)  # (B, F, F)
        return gram[:, self.left, self.right]
