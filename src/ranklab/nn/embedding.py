"""Embeddings sized from the schema.

All categorical tables a module uses are packed into one ``nn.Embedding`` with a row offset
per table, so embedding F fields is one gather instead of F (measurably faster on CPU for
the small tables of CTR data). Features that share a table (target item and history items)
share rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ranklab.data.schema import Feature, Schema, weight_key
from ranklab.errors import SchemaError


class FeatureEmbedding(nn.Module):
    """Embeds the non-sequence fields of a schema and, on request, sequences.

    A bag (a multi-valued field) is one field: its items' embeddings pooled, summed with its
    values as weights (``weighted``) or by count, or averaged over the row's items.

    Args:
        schema: the data schema.
        dim: embedding size D.
        fields: the categorical/bag/numeric fields ``forward`` returns (default: all of them),
            grouped by kind: categorical, then bags, then numeric.
        extra_tables: further tables to hold (e.g. a history's side tables not used by
            ``fields``); every table of a sequence feature is included by default.
        init_std: embeddings start as N(0, init_std^2) (FuxiCTR's default 1e-4).

    Shapes:
        forward: features -> (B, F, D) with F = len(fields); a bag's (B, L) ids (and values)
            become one (B, D) field.
        sequence(name, features): (B, L) ids -> (B, L, D).

    Example:
        >>> emb = FeatureEmbedding(schema, 10)
        >>> emb(batch.features).shape   # (B, num_fields, 10)
    """

    def __init__(
        self,
        schema: Schema,
        dim: int,
        fields: Sequence[str] | None = None,
        extra_tables: Sequence[str] = (),
        init_std: float = 1e-4,
    ) -> None:
        super().__init__()
        if fields is None:
            fields = [f.name for f in schema.of_kind("categorical", "bag", "numeric")]
        if not fields and not extra_tables:
            raise SchemaError(
                f"the data has no categorical or numeric fields to embed (features: {schema.names})"
            )
        schema.require(fields)
        feats = [schema[n] for n in fields]
        bad = [f.name for f in feats if f.kind == "sequence"]
        if bad:
            raise ValueError(f"sequences {bad} are embedded with .sequence(), not as fields")
        self.dim = dim
        self.cat_fields = [f.name for f in feats if f.kind == "categorical"]
        self.bags = [f for f in feats if f.kind == "bag"]
        self.num_fields = [f.name for f in feats if f.kind == "numeric"]
        sizes = schema.tables
        used = {f.table for f in feats if f.kind in ("categorical", "bag")}
        used |= {f.table for f in schema.sequences} | set(extra_tables)
        self.offsets: dict[str, int] = {}
        rows = 0
        for table in sorted(used):
            self.offsets[table] = rows
            rows += sizes[table]
        self.table_of = {f.name: f.table for f in schema.features if f.kind != "numeric"}
        self.embedding = nn.Embedding(max(rows, 1), dim)
        nn.init.normal_(self.embedding.weight, std=init_std)
        self.register_buffer(
            "field_offsets",
            torch.tensor(
                [self.offsets[self.table_of[n]] for n in self.cat_fields], dtype=torch.long
            ),
            persistent=False,
        )
        self.numeric = (
            nn.Parameter(torch.randn(len(self.num_fields), dim) * init_std)
            if self.num_fields
            else None
        )

    @property
    def num_fields_total(self) -> int:
        return len(self.cat_fields) + len(self.bags) + len(self.num_fields)

    def _items(self, bag: Feature, features: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """A bag's items as vectors scaled by their values (B, L, D) (0 in padding), and the
        (B, L) mask of real items (id > 0)."""
        ids = features[bag.name]
        mask = (ids > 0).to(self.embedding.weight.dtype)
        w = features[weight_key(bag.name)] * mask if bag.weighted else mask
        return self.lookup(ids, bag.table) * w.unsqueeze(-1), mask

    def pool(self, bag: Feature, features: dict[str, Tensor]) -> Tensor:
        """A bag's (B, L) ids (0 = padding) [and (B, L) values] -> (B, D)."""
        return self._pool(bag, *self._items(bag, features))

    @staticmethod
    def _pool(bag: Feature, items: Tensor, mask: Tensor) -> Tensor:
        out = items.sum(1)  # (B, D)
        return out / mask.sum(1, keepdim=True).clamp(min=1.0) if bag.pooling == "mean" else out

    def with_bag_pairs(self, features: dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        """``forward`` and the FM pairs inside each sum-pooled bag, sum_{i<j} w_i w_j <e_i, e_j>
        (B,) (None without such bags), from one lookup of each bag. An FM over fields sees a bag
        as one vector, so it misses these: added to it, it is libFM's FM over every token
        (Rendle 2010, eq. 5 within the bag)."""
        pooled, pairs = [], None
        for bag in self.bags:
            items, mask = self._items(bag, features)  # (B, L, D)
            pooled.append(self._pool(bag, items, mask))
            if bag.pooling == "sum":
                p = 0.5 * (items.sum(1).pow(2) - items.pow(2).sum(1)).sum(1)  # (B,)
                pairs = p if pairs is None else pairs + p
        return self._fields(features, pooled), pairs

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        """features -> (B, F, D): categorical fields first, then bags (pooled), then numeric
        (value * vector)."""
        return self._fields(features, [self.pool(b, features) for b in self.bags])

    def _fields(self, features: dict[str, Tensor], pooled: list[Tensor]) -> Tensor:
        """(B, F, D) from the categorical and numeric features and the bags' (B, D) vectors."""
        parts = []
        if self.cat_fields:
            ids = torch.stack([features[n] for n in self.cat_fields], dim=1)  # (B, Fc)
            parts.append(self.embedding(ids + self.field_offsets))  # (B, Fc, D)
        if pooled:
            parts.append(torch.stack(pooled, dim=1))  # (B, Fb, D)
        if self.numeric is not None:
            x = torch.stack([features[n] for n in self.num_fields], dim=1)  # (B, Fn)
            parts.append(x.unsqueeze(-1) * self.numeric)  # (B, Fn, D)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def lookup(self, ids: Tensor, table: str) -> Tensor:
        """Ids of ``table``, any shape (...) -> (..., D)."""
        return self.embedding(ids + self.offsets[table])

    def sequence(self, name: str, features: dict[str, Tensor]) -> Tensor:
        """A sequence feature (B, L) -> (B, L, D), embedded with its table's rows."""
        return self.lookup(features[name], self.table_of[name])


class LinearTerm(nn.Module):
    """First-order (logistic regression) term: [bias +] sum of per-id weights + numeric weights.

    features -> (B,). Models whose other parts already carry a bias (DeepFM, Wide&Deep: the
    MLP's output layer) build it with ``bias=False``, as FuxiCTR does. The per-id weights are
    a dimension-1 FeatureEmbedding, so they count as embeddings for the embedding regulariser,
    as in FuxiCTR.
    """

    def __init__(
        self,
        schema: Schema,
        fields: Sequence[str] | None = None,
        init_std: float = 1e-4,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.weights = FeatureEmbedding(schema, 1, fields=fields, init_std=init_std)
        self.bias = nn.Parameter(torch.zeros(1)) if bias else None

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        out = self.weights(features).sum(dim=(1, 2))  # (B,)
        return out + self.bias if self.bias is not None else out
