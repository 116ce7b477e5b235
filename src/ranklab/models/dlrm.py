"""DLRM (Naumov et al., 2019): bottom MLP for numeric fields, pairwise dot interactions with the
embeddings, top MLP."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ranklab.data.schema import Schema
from ranklab.errors import ConfigError
from ranklab.nn import MLP, FeatureEmbedding
from ranklab.nn.interaction import DotInteraction
from ranklab.nn.mlp import activation as make_activation


class DLRM(nn.Module):
    """Dense (numeric) fields -> bottom MLP (every layer activated, the last too, as in the
    reference code) -> one vector (B, D) beside the categorical embeddings (B, Fc, D).
    ``interaction="dot"``: the pairwise dot products of all of them (B, P) with the dense
    vector -> top MLP; ``"cat"``: the concatenated vectors -> top MLP (BARS's tuned Frappe_x1
    setting). Without numeric fields there is no bottom MLP."""

    def __init__(
        self,
        schema: Schema,
        embedding_dim: int = 10,
        interaction: str = "dot",
        bottom_units: Sequence[int] = (64,),
        top_units: Sequence[int] = (400, 400, 400),
        dropout: float = 0.0,
        batch_norm: bool = False,
        activation: str = "relu",
        init_std: float = 1e-4,
    ) -> None:
        super().__init__()
        if interaction not in ("dot", "cat"):
            raise ConfigError("model.interaction", f"must be dot or cat, got '{interaction}'")
        cat = [f.name for f in schema.of_kind("categorical", "bag")]
        self.numeric = [f.name for f in schema.numeric]
        self.embedding = FeatureEmbedding(schema, embedding_dim, fields=cat, init_std=init_std)
        self.bottom = None
        if self.numeric:  # the dense fields' vector, as wide as an embedding
            self.bottom = MLP(
                len(self.numeric), bottom_units, embedding_dim, 0.0, batch_norm, activation
            )
            # the reference's bottom MLP (and FuxiCTR's) activates its last layer too, so the
            # dense vector entering the dot products is, like that code's, >= 0 under ReLU
            self.bottom.append(make_activation(activation, embedding_dim))
        n = self.embedding.num_fields_total + (1 if self.bottom is not None else 0)
        if interaction == "dot" and n < 2:  # no pair to take a dot product of: a constant model
            raise ConfigError(
                "model.interaction",
                f"'dot' needs two or more vectors (fields, plus the numeric fields' one) and "
                f"this data gives {n}: use model.interaction=cat",
            )
        self.interaction = DotInteraction(n) if interaction == "dot" else None
        width = (
            self.interaction.out_dim + (embedding_dim if self.bottom is not None else 0)
            if self.interaction is not None
            else n * embedding_dim
        )
        self.top = MLP(width, top_units, 1, dropout, batch_norm, activation)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        vectors = self.embedding(features)  # (B, Fc, D)
        dense = None
        if self.bottom is not None:
            dense = self.bottom(torch.stack([features[n] for n in self.numeric], dim=1))
            vectors = torch.cat([dense.unsqueeze(1), vectors], dim=1)  # (B, Fc+1, D)
        if self.interaction is None:
            x = vectors.flatten(1)
        else:
            x = self.interaction(vectors)  # (B, P)
            if dense is not None:
                x = torch.cat([dense, x], dim=1)
        return self.top(x).squeeze(-1)
