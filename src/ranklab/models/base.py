"""The model contract.

**Ranking models** (CTR, sequence-aware, multi-task) map ``features`` (name -> (B,) or (B, L)
tensors) to logits for each label of the schema: a (B,) tensor when the schema has one label,
a dict label -> (B,) when it has several; either may be wrapped as ``{"logits": ...,
"<name>_loss": scalar}`` to add auxiliary losses (DIEN's next-behaviour loss). Nothing else:
no loss, optimiser, device or file access. :class:`MultiTaskModel` is the encoder/heads split
(TorchRec's over-arch, timm's features/head): ``encode(features) -> (B, H)`` or per label
``{label: (B, H)}``, then one tower per label, so a new label needs no new encoder. A model
may suggest a label's loss with ``loss_for(spec)`` (ESMM: the entire-space loss).

**Retrieval models** (:class:`RetrievalModel`) provide ``encode(history (B, L)) -> (B, L, D)``
states and ``item_embeddings() -> (V, D)``; the score of item i after position t is
``<state_t, e_i>``. Which fields are the history and the target comes from the schema.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from torch import Tensor, nn

from ranklab.data.schema import LabelSpec, Schema
from ranklab.errors import SchemaError
from ranklab.losses import LabelLoss
from ranklab.nn import MLP, FeatureEmbedding


class MultiTaskModel(nn.Module):
    """A ranking model for several labels: an encoder, then one tower (MLP -> 1 logit) per
    label of the schema.

    Subclasses build their encoder and call :meth:`build_towers` with its output width; they
    implement ``encode(features) -> (B, H)`` (shared by every tower) or ``{label: (B, H)}``
    (one input per tower: MMoE's and PLE's gated mixtures).
    """

    family: ClassVar[str] = "multitask"
    multi_label: ClassVar[bool] = True

    def __init__(self, schema: Schema) -> None:
        super().__init__()
        if not schema.labels:
            raise SchemaError(f"{type(self).__name__} needs labels; the data has none")
        self.labels = schema.label_names

    def build_towers(
        self,
        in_dim: int,
        hidden_units: Sequence[int],
        dropout: float = 0.0,
        batch_norm: bool = False,
        activation: str = "relu",
    ) -> None:
        """One MLP tower per label: (B, in_dim) -> (B, 1)."""
        self.towers = nn.ModuleDict(
            {
                name: MLP(in_dim, hidden_units, 1, dropout, batch_norm, activation)
                for name in self.labels
            }
        )

    def encode(self, features: dict[str, Tensor]) -> Tensor | dict[str, Tensor]:
        raise NotImplementedError

    def forward(self, features: dict[str, Tensor]) -> Tensor | dict[str, Tensor]:
        """features -> (B,) logits (one label) or {label: (B,)}."""
        h = self.encode(features)
        out = {
            name: tower(h[name] if isinstance(h, dict) else h).squeeze(-1)
            for name, tower in self.towers.items()
        }
        return out[self.labels[0]] if len(out) == 1 else out

    def loss_for(self, spec: LabelSpec) -> LabelLoss | None:
        """The loss this model is meant to be trained with for ``spec`` (None: the default)."""
        return None


class RetrievalModel(nn.Module):
    """Base of the retrieval family: the history and target fields (from the schema: the
    sequence whose embedding table a categorical feature shares), and the item table.

    Args:
        schema: the data schema.
        history, target: field names; None takes them from the schema.
        embedding_dim: D of the item table (0: no table, e.g. PopRec).
        init_std: item embeddings start at N(0, init_std^2).
    """

    family: ClassVar[str] = "retrieval"

    def __init__(
        self,
        schema: Schema,
        history: str | None = None,
        target: str | None = None,
        embedding_dim: int = 0,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if history is None:
            pairs = [(s.name, schema.target_for(s)) for s in schema.sequences]
            pairs = [(h, t) for h, t in pairs if t is not None]
            if not pairs:
                raise SchemaError(
                    f"model {name} needs a history whose items share a table with a target "
                    f"feature (features: {schema.names})"
                )
            history = pairs[0][0]
            target = target or pairs[0][1].name
        schema.require([history], kind="sequence", model=name)
        if target is None:
            found = schema.target_for(schema[history])
            if found is None:
                raise SchemaError(f"model {name}: no target feature shares '{history}''s table")
            target = found.name
        schema.require([target], kind="categorical", model=name)
        self.history, self.target = history, target
        self.table = schema[history].table
        self.n_items = schema.tables[self.table]
        self.max_len = schema[history].max_len
        if embedding_dim:
            self.embedding = FeatureEmbedding(
                schema, embedding_dim, fields=[], extra_tables=[self.table], init_std=init_std
            )

    def item_embeddings(self) -> Tensor:
        """(V, D): the rows of the item table, ids 0 (padding) and 1 (OOV) included."""
        start = self.embedding.offsets[self.table]
        return self.embedding.embedding.weight[start : start + self.n_items]

    def encode(self, history: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        """Score of ``target`` (B,) given ``history`` (B, L): (B,)."""
        state = self.encode(features[self.history])[:, -1]  # (B, D)
        return (state * self.item_embeddings()[features[self.target]]).sum(-1)
