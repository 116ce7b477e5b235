"""Blocks for behaviour sequences: target attention, masked GRUs, a masked transformer layer.

Conventions (DESIGN.md, "Sequences"): a history is (B, L) int64 ids left-padded with 0, the
most recent event at L-1; ``mask = ids != 0`` (B, L). Every block here gives the same output
at valid positions whatever padding is added on the left: padded steps are masked out of
attention, pooling and recurrent updates, and positions are counted from the most recent event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ranklab.data.schema import Schema
from ranklab.errors import SchemaError
from ranklab.nn.embedding import FeatureEmbedding
from ranklab.nn.mlp import MLP, activation

# -- which fields make a history ---------------------------------------------------------------


@dataclass(frozen=True)
class HistoryFields:
    """The fields of one behaviour history.

    Attributes:
        history: the main sequence (e.g. ``hist_item``); its ids give the mask.
        paired: (sequence, target) pairs sharing an embedding table, the main history first
            (``hist_item`` <-> ``item``, ``hist_cate`` <-> ``cate``).
        side: aligned side fields with no target (``hist_action``, ``hist_gap``); they only
            enter the history side.
    """

    history: str
    paired: tuple[tuple[str, str], ...]
    side: tuple[str, ...]

    @property
    def sequences(self) -> list[str]:
        return [s for s, _ in self.paired]

    @property
    def targets(self) -> list[str]:
        return [t for _, t in self.paired]


def history_fields(schema: Schema, history: str | None, model: str) -> HistoryFields:
    """Resolve a model's history (default: the first sequence that is not a side field).

    Raises ``SchemaError`` naming what is missing: no sequence, an unknown ``history``, or a
    history with no target feature sharing its embedding table.
    """
    if history is None:
        mains = [f.name for f in schema.sequences if f.sequence is None]
        if not mains:
            raise SchemaError(
                f"model {model} needs a history: the data has no sequence feature "
                f"(features: {schema.names})"
            )
        history = mains[0]
    schema.require([history], kind="sequence", model=model)
    if schema[history].sequence is not None:
        raise SchemaError(
            f"model {model}: history '{history}' is a side field of '{schema[history].sequence}'"
        )
    paired, side = [], []
    for f in [schema[history]] + [f for f in schema.sequences if f.sequence == history]:
        target = schema.target_for(f)
        if target is not None:
            paired.append((f.name, target.name))
        elif f.name == history:
            raise SchemaError(
                f"model {model}: history '{history}' has no target: no categorical feature "
                f"shares its embedding table '{f.table}' (features: {schema.names})"
            )
        else:
            side.append(f.name)
    return HistoryFields(history, tuple(paired), tuple(side))


def embed_steps(
    embedding: FeatureEmbedding, features: dict[str, Tensor], names: Sequence[str]
) -> Tensor:
    """Concatenated embeddings of aligned sequence fields: n fields of (B, L) -> (B, L, n*D)."""
    return torch.cat([embedding.sequence(n, features) for n in names], dim=-1)


# -- pooling ---------------------------------------------------------------------


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over valid steps: (B, L, D), (B, L) -> (B, D); 0 for a row with no valid step."""
    m = mask.unsqueeze(-1).to(x.dtype)  # (B, L, 1)
    return (x * m).sum(1) / m.sum(1).clamp(min=1)


def masked_max(x: Tensor, mask: Tensor) -> Tensor:
    """Max over valid steps: (B, L, D), (B, L) -> (B, D); 0 for a row with no valid step."""
    neg = torch.finfo(x.dtype).min
    out = x.masked_fill(~mask.unsqueeze(-1), neg).amax(1)  # (B, D)
    return torch.where(mask.any(1, keepdim=True), out, torch.zeros_like(out))


def last_k(x: Tensor, mask: Tensor, k: int) -> Tensor:
    """The K most recent steps, most recent last, zeros where padded: (B, L, D) -> (B, K, D).

    Widths L < K are padded with zeros on the left, so the result does not depend on L.
    """
    x = x * mask.unsqueeze(-1).to(x.dtype)  # padded steps -> 0
    return F.pad(x, (0, 0, max(0, k - x.shape[1]), 0))[:, -k:]  # (B, K, D)


def transact_pool(x: Tensor, mask: Tensor, k: int) -> Tensor:
    """TransAct's output (Xia et al., 2023): [max over valid steps, the last K steps flattened].

    (B, L, D), (B, L) -> (B, (K + 1) * D).
    """
    return torch.cat([masked_max(x, mask), last_k(x, mask, k).flatten(1)], dim=1)


# -- target attention --------------------------------------------------------------------------


class LocalActivationUnit(nn.Module):
    """DIN's local activation unit (Zhou et al., 2018, fig. 2): one unnormalised weight per step.

    w_l = MLP([q, k_l, q - k_l, q * k_l, s_l]) for valid steps, 0 for padded ones (no softmax,
    as in the paper, so the pooled interest keeps the intensity of the user's interest).
    ``s_l`` are optional side-field embeddings of the step (action type, time gap) that have
    no counterpart on the target side.

    Shapes: query (B, D), keys (B, L, D), mask (B, L), side (B, L, S) or None -> (B, L).
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (36,),
        side_dim: int = 0,
        act: str = "dice",
    ) -> None:
        super().__init__()
        self.mlp = MLP(4 * dim + side_dim, hidden, 1, act=act)

    def forward(
        self, query: Tensor, keys: Tensor, mask: Tensor, side: Tensor | None = None
    ) -> Tensor:
        q = query.unsqueeze(1).expand_as(keys)  # (B, L, D)
        parts = [q, keys, q - keys, q * keys] + ([side] if side is not None else [])
        x = torch.cat(parts, dim=-1)  # (B, L, 4D + S)
        # the MLP sees the valid steps only (N, 4D + S): Dice's batch statistics in training are
        # then the histories', not diluted by however much left padding the batch's width adds
        scores = self.mlp(x[mask]).squeeze(-1)  # (N,): in autocast's dtype under mixed precision
        w = scores.new_zeros(mask.shape)  # (B, L)
        w[mask] = scores
        return w


# -- recurrent blocks --------------------------------------------------------------------------


class MaskedGRU(nn.Module):
    """GRU over a left-padded sequence; a padded step leaves the state unchanged.

    (B, L, D_in), (B, L) -> states (B, L, H): the state after each step (the zero initial
    state before the first valid step), so the states of the valid steps equal those of a GRU
    run over the unpadded sequence.
    """

    def __init__(self, in_dim: int, hidden: int) -> None:
        super().__init__()
        self.cell = nn.GRUCell(in_dim, hidden)
        self.hidden = hidden

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        h = x.new_zeros(x.shape[0], self.hidden)  # (B, H)
        states = []
        for t in range(x.shape[1]):
            h = torch.where(mask[:, t, None], self.cell(x[:, t], h), h)  # (B, H)
            states.append(h)
        return torch.stack(states, dim=1)  # (B, L, H)


class AUGRUCell(nn.Module):
    """GRU with attentional update gate (DIEN, Zhou et al., 2019, eqs. 5-6).

    u' = a * u;  h' = (1 - u') * h + u' * h~, with u, h~ the GRU's update gate and candidate.
    x (B, D_in), h (B, H), a (B,) -> (B, H).
    """

    def __init__(self, in_dim: int, hidden: int) -> None:
        super().__init__()
        self.x_gates = nn.Linear(in_dim, 3 * hidden)  # reset, update, candidate from x
        self.h_gates = nn.Linear(hidden, 3 * hidden)

    def forward(self, x: Tensor, h: Tensor, att: Tensor) -> Tensor:
        xr, xu, xn = self.x_gates(x).chunk(3, dim=-1)  # (B, H) each
        hr, hu, hn = self.h_gates(h).chunk(3, dim=-1)
        r = torch.sigmoid(xr + hr)
        u = torch.sigmoid(xu + hu) * att.unsqueeze(-1)  # attentional update gate (B, H)
        cand = torch.tanh(xn + r * hn)
        return (1 - u) * h + u * cand


class AUGRU(nn.Module):
    """AUGRU over a left-padded sequence: (B, L, D_in), att (B, L), mask (B, L) -> final (B, H).

    A padded step leaves the state unchanged; the result equals the loop over the unpadded
    sequence.
    """

    def __init__(self, in_dim: int, hidden: int) -> None:
        super().__init__()
        self.cell = AUGRUCell(in_dim, hidden)
        self.hidden = hidden

    def forward(self, x: Tensor, att: Tensor, mask: Tensor) -> Tensor:
        h = x.new_zeros(x.shape[0], self.hidden)  # (B, H)
        for t in range(x.shape[1]):
            h = torch.where(mask[:, t, None], self.cell(x[:, t], h, att[:, t]), h)
        return h


def masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    """Softmax over valid steps: (B, L), (B, L) -> (B, L), 0 where padded (all 0 if none)."""
    p = torch.softmax(scores.masked_fill(~mask, torch.finfo(scores.dtype).min), dim=1)
    return p * mask.to(p.dtype)


# -- transformer -------------------------------------------------------------------------------


class TransformerBlock(nn.Module):
    """Post-norm transformer encoder layer (Vaswani et al., 2017) with masked keys.

    x = LN(x + Dropout(MHA(x))); x = LN(x + Dropout(FFN(x))). Padded steps are never attended
    to, so outputs at valid positions do not depend on the padding; outputs at padded positions
    are meaningless and must be masked by the caller. A row with no valid step attends to all
    of its (padded) steps instead of producing NaN.

    x (B, L, D), mask (B, L) -> (B, L, D).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        dim_feedforward: int,
        dropout: float = 0.0,
        act: str = "relu",
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide the step dimension {dim}")
        self.num_heads, self.dropout = num_heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, dim_feedforward),
            activation(act),
            nn.Dropout(dropout),
            nn.Linear(dim_feedforward, dim),
        )
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        B, L, D = x.shape
        qkv = self.qkv(x).view(B, L, 3, self.num_heads, D // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, L, D / heads)
        keep = mask | ~mask.any(1, keepdim=True)  # (B, L): empty rows attend to everything
        a = F.scaled_dot_product_attention(
            q, k, v, attn_mask=keep[:, None, None, :], dropout_p=self.dropout * self.training
        )  # (B, heads, L, D / heads)
        x = self.norm1(x + self.drop(self.proj(a.transpose(1, 2).reshape(B, L, D))))
        return self.norm2(x + self.drop(self.ffn(x)))


class RecencyEmbedding(nn.Module):
    """Learned position embeddings counted from the most recent step (position 0 = last step).

    L -> (L, D): row i is the embedding of position L-1-i, so the rightmost step always gets
    position 0, whatever the left padding. Needs L <= max_len.
    """

    def __init__(self, max_len: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(max_len, dim)
        nn.init.normal_(self.embedding.weight, std=0.02)

    def forward(self, length: int) -> Tensor:
        if length > self.embedding.num_embeddings:
            raise ValueError(f"sequence of {length} steps, max_len={self.embedding.num_embeddings}")
        pos = torch.arange(length - 1, -1, -1, device=self.embedding.weight.device)  # (L,)
        return self.embedding(pos)  # (L, D)
