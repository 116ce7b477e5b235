"""Every block against a naive reference written as plainly as possible."""

from __future__ import annotations

import itertools

import pytest
import torch

from ranklab.data.schema import Feature, Schema
from ranklab.nn import (
    MLP,
    CrossNet,
    CrossNetMix,
    CrossNetV2,
    FeatureEmbedding,
    FMInteraction,
    LinearTerm,
)


def test_fm_matches_pairwise_loop() -> None:
    emb = torch.randn(7, 5, 4, dtype=torch.float64)
    naive = torch.zeros(7, dtype=torch.float64)
    for b in range(7):
        for i, j in itertools.combinations(range(5), 2):
            naive[b] += (emb[b, i] * emb[b, j]).sum()
    torch.testing.assert_close(FMInteraction()(emb), naive)


def test_crossnet_matches_loop() -> None:
    net = CrossNet(6, 3).double()
    x0 = torch.randn(4, 6, dtype=torch.float64)
    for b in net.b:
        torch.nn.init.normal_(b)
    out = torch.empty_like(x0)
    for r in range(4):
        x = x0[r].clone()
        for w, b in zip(net.w, net.b):
            x = x0[r] * (x @ w) + b + x
        out[r] = x
    torch.testing.assert_close(net(x0), out)


def test_crossnet_v2_matches_loop() -> None:
    net = CrossNetV2(5, 2).double()
    x0 = torch.randn(3, 5, dtype=torch.float64)
    out = torch.empty_like(x0)
    for r in range(3):
        x = x0[r].clone()
        for lin in net.layers:
            x = x0[r] * (lin.weight @ x + lin.bias) + x
        out[r] = x
    torch.testing.assert_close(net(x0), out)


def test_crossnet_mix_matches_loop() -> None:
    d, r, e = 6, 2, 3
    net = CrossNetMix(d, 2, r, e).double()
    for b in net.b:
        torch.nn.init.normal_(b)
    x0 = torch.randn(4, d, dtype=torch.float64)
    out = torch.empty_like(x0)
    for row in range(4):
        x = x0[row].clone()
        for layer in range(2):
            U, V, C, b = net.U[layer], net.V[layer], net.C[layer], net.b[layer]
            experts, logits = [], []
            for i in range(e):
                h = torch.tanh(V[i].T @ x)
                h = torch.tanh(C[i] @ h)
                experts.append(x0[row] * (U[i] @ h + b))
                logits.append(net.gates[i].weight[0] @ x)
            g = torch.softmax(torch.stack(logits), 0)
            x = sum(g[i] * experts[i] for i in range(e)) + x
        out[row] = x
    torch.testing.assert_close(net(x0), out)


def test_mlp_layers_and_shape() -> None:
    mlp = MLP(8, [16, 4], out_dim=1, dropout=0.1, batch_norm=True)
    kinds = [type(m).__name__ for m in mlp]
    assert kinds == [
        "Linear",
        "BatchNorm1d",
        "ReLU",
        "Dropout",
        "Linear",
        "BatchNorm1d",
        "ReLU",
        "Dropout",
        "Linear",
    ]
    assert mlp(torch.randn(5, 8)).shape == (5, 1)
    with pytest.raises(ValueError, match="unknown activation"):
        MLP(2, [2], act="nope")


def _schema() -> Schema:
    return Schema(
        (
            Feature("user", "categorical", vocab_size=5, role="user"),
            Feature("item", "categorical", vocab_size=7, role="item"),
            Feature("hist", "sequence", vocab_size=7, table="item", max_len=3),
            Feature("price", "numeric"),
        )
    )


def test_feature_embedding_matches_separate_tables() -> None:
    schema = _schema()
    emb = FeatureEmbedding(schema, 4, init_std=1.0)
    feats = {
        "user": torch.tensor([0, 2, 4]),
        "item": torch.tensor([6, 1, 3]),
        "hist": torch.tensor([[0, 2, 6], [0, 0, 3], [1, 2, 3]]),
        "price": torch.tensor([0.5, -1.0, 2.0]),
    }
    w = emb.embedding.weight
    user_rows = w[emb.offsets["user"] : emb.offsets["user"] + 5]
    item_rows = w[emb.offsets["item"] : emb.offsets["item"] + 7]
    expected = torch.stack(
        [
            user_rows[feats["user"]],
            item_rows[feats["item"]],
            feats["price"][:, None] * emb.numeric[0],
        ],
        dim=1,
    )
    torch.testing.assert_close(emb(feats), expected)
    # the history shares the item table: same ids, same rows
    torch.testing.assert_close(emb.sequence("hist", feats), item_rows[feats["hist"]])
    assert w.shape[0] == 5 + 7  # one row block per table, not per feature


def test_linear_term_matches_sum_of_weights() -> None:
    schema = _schema()
    lin = LinearTerm(schema, init_std=1.0)
    torch.nn.init.normal_(lin.bias)
    feats = {
        "user": torch.tensor([2, 3]),
        "item": torch.tensor([4, 5]),
        "price": torch.tensor([1.5, -2.0]),
    }
    e = lin.weights
    w = e.embedding.weight[:, 0]
    naive = torch.stack(
        [
            lin.bias[0]
            + w[e.offsets["user"] + feats["user"][b]]
            + w[e.offsets["item"] + feats["item"][b]]
            + feats["price"][b] * e.numeric[0, 0]
            for b in range(2)
        ]
    )
    torch.testing.assert_close(lin(feats), naive)
