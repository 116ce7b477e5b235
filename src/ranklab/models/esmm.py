"""ESMM (Ma et al., SIGIR 2018): CTR and CVR towers on a shared embedding, trained over every
impression through pCTCVR = pCTR x pCVR."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from torch import Tensor

from ranklab.data.schema import LabelSpec, Schema
from ranklab.errors import SchemaError
from ranklab.losses import EntireSpace, LabelLoss
from ranklab.models.base import MultiTaskModel
from ranklab.nn import FeatureEmbedding


class ESMM(MultiTaskModel):
    """One shared embedding (B, F*D); a tower per label: the CTR tower (the condition) and the
    CVR tower (the conditional label, e.g. conversion observed only where click == 1). The CVR
    label is trained with :class:`ranklab.losses.EntireSpace` on pCTR x pCVR against
    click x conversion over every row, so pCVR is never fit on clicked rows alone; the metrics
    score pCVR on clicked rows, pCTCVR on every row."""

    needs_condition: ClassVar[bool] = True  # data with a conditional label (click -> conversion)

    def __init__(
        self,
        schema: Schema,
        embedding_dim: int = 10,
        tower_units: Sequence[int] = (200, 80),
        dropout: float = 0.0,
        batch_norm: bool = False,
        activation: str = "relu",
        init_std: float = 1e-4,
    ) -> None:
        super().__init__(schema)
        self.embedding = FeatureEmbedding(schema, embedding_dim, init_std=init_std)
        if not any(s.condition in self.labels for s in schema.labels):
            given = [(s.name, s.condition) for s in schema.labels]
            raise SchemaError(
                "ESMM needs a label observed only under another (e.g. conversion with "
                f"condition: click); the labels (name, condition) are {given}"
            )
        d = self.embedding.num_fields_total * embedding_dim
        self.build_towers(d, tower_units, dropout, batch_norm, activation)

    def encode(self, features: dict[str, Tensor]) -> Tensor:
        return self.embedding(features).flatten(1)  # (B, F*D), shared by the towers

    def loss_for(self, spec: LabelSpec) -> LabelLoss | None:
        return EntireSpace() if spec.condition in self.labels else None
