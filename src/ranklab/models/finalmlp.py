"""FinalMLP (Mao et al., AAAI 2023): two MLP streams with feature gating, fused by a
multi-head bilinear layer."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ranklab.data.schema import Schema
from ranklab.nn import MLP, FeatureEmbedding
from ranklab.nn.gating import BilinearFusion, FeatureGating


class FinalMLP(nn.Module):
    """x = flatten(E) (B, d). Stream s (1, 2): x_s = x * 2 sigmoid(MLP(c_s)) when ``use_fs``,
    c_s the embeddings of ``fs<s>_context`` fields (their own tables, as in FuxiCTR) or a
    learned vector; o_s = MLP_s(x_s). logit = BilinearFusion(o1, o2) with ``num_heads`` heads."""

    def __init__(
        self,
        schema: Schema,
        embedding_dim: int = 10,
        mlp1_hidden_units: Sequence[int] = (400,),
        mlp1_dropout: float = 0.0,
        mlp1_batch_norm: bool = False,
        mlp2_hidden_units: Sequence[int] = (100,),
        mlp2_dropout: float = 0.0,
        mlp2_batch_norm: bool = False,
        use_fs: bool = True,
        fs_hidden_units: Sequence[int] = (400,),
        fs1_context: Sequence[str] = (),
        fs2_context: Sequence[str] = (),
        num_heads: int = 1,
        activation: str = "relu",
        init_std: float = 1e-4,
    ) -> None:
        super().__init__()
        self.embedding = FeatureEmbedding(schema, embedding_dim, init_std=init_std)
        d = self.embedding.num_fields_total * embedding_dim
        self.contexts = [list(fs1_context), list(fs2_context)]
        self.context_emb = nn.ModuleList(
            FeatureEmbedding(schema, embedding_dim, fields=ctx, init_std=init_std)
            if use_fs and ctx
            else nn.Identity()
            for ctx in self.contexts
        )
        self.gates = (
            nn.ModuleList(
                FeatureGating(d, embedding_dim * len(ctx), fs_hidden_units, embedding_dim)
                for ctx in self.contexts
            )
            if use_fs
            else None
        )
        self.mlp1 = MLP(d, mlp1_hidden_units, None, mlp1_dropout, mlp1_batch_norm, activation)
        self.mlp2 = MLP(d, mlp2_hidden_units, None, mlp2_dropout, mlp2_batch_norm, activation)
        self.fusion = BilinearFusion(self.mlp1.out_dim, self.mlp2.out_dim, num_heads)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        x = self.embedding(features).flatten(1)  # (B, d)
        streams = [x, x]
        if self.gates is not None:
            streams = [
                gate(x, emb(features).flatten(1) if ctx else None)
                for gate, emb, ctx in zip(self.gates, self.context_emb, self.contexts)
            ]
        return self.fusion(self.mlp1(streams[0]), self.mlp2(streams[1]))
