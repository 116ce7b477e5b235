"""MaskNet (Wang et al., DLP-KDD 2021): instance-guided masks on the embedding and hidden
layers, in serial or parallel MaskBlocks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ranklab.data.schema import Schema
from ranklab.errors import ConfigError
from ranklab.nn import MLP, FeatureEmbedding
from ranklab.nn.gating import MaskBlock


class MaskNet(nn.Module):
    """V_emb = flatten(E) (B, d), masked by instance-guided masks computed from V_emb.

    parallel: ``num_blocks`` MaskBlocks of width ``block_dim`` on V_emb, concatenated, then an
    MLP (``hidden_units``) -> logit. serial: MaskBlocks of widths ``hidden_units`` one after the
    other (each masked by V_emb) -> linear -> logit. ``emb_layernorm`` normalises each field's
    embedding of the blocks' input; ``net_layernorm`` the blocks' outputs.
    """

    def __init__(
        self,
        schema: Schema,
        embedding_dim: int = 10,
        model_type: str = "parallel",
        num_blocks: int = 3,
        block_dim: int = 50,
        reduction_ratio: float = 1.0,
        emb_layernorm: bool = False,
        net_layernorm: bool = True,
        hidden_units: Sequence[int] = (400, 400, 400),
        dropout: float = 0.0,
        activation: str = "relu",
        init_std: float = 1e-4,
    ) -> None:
        super().__init__()
        if model_type not in ("parallel", "serial"):
            raise ConfigError("model.model_type", f"must be parallel or serial, got '{model_type}'")
        self.embedding = FeatureEmbedding(schema, embedding_dim, init_std=init_std)
        d = self.embedding.num_fields_total * embedding_dim
        self.emb_norm = nn.LayerNorm(embedding_dim) if emb_layernorm else None
        self.parallel = model_type == "parallel"
        if self.parallel:
            self.blocks = nn.ModuleList(
                MaskBlock(d, d, block_dim, reduction_ratio, dropout, net_layernorm)
                for _ in range(num_blocks)
            )
            self.head = MLP(num_blocks * block_dim, hidden_units, 1, dropout, False, activation)
        else:
            widths = [d, *hidden_units]
            self.blocks = nn.ModuleList(
                MaskBlock(widths[i], d, widths[i + 1], reduction_ratio, dropout, net_layernorm)
                for i in range(len(hidden_units))
            )
            self.head = nn.Linear(widths[-1], 1)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        emb = self.embedding(features)  # (B, F, D)
        v_emb = emb.flatten(1)  # (B, d): what every mask is computed from
        v_in = (self.emb_norm(emb) if self.emb_norm is not None else emb).flatten(1)
        if self.parallel:
            h = torch.cat([block(v_in, v_emb) for block in self.blocks], dim=1)
        else:
            h = v_in
            for block in self.blocks:
                h = block(h, v_emb)
        return self.head(h).squeeze(-1)
