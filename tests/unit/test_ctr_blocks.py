"""The blocks of xDeepFM, AutoInt+, FiBiNET, MaskNet, DLRM and FinalMLP against naive loops over
fields, heads and pairs, on random input."""

from __future__ import annotations

import itertools

import pytest
import torch

from ranklab.nn.attention import FieldSelfAttention
from ranklab.nn.gating import BilinearFusion, FeatureGating, MaskBlock
from ranklab.nn.interaction import CIN, BilinearInteraction, DotInteraction, SENet


def test_cin_matches_the_feature_map_sums() -> None:
    torch.manual_seed(0)
    cin = CIN(3, [4, 2]).double()
    x0 = torch.randn(2, 3, 5, dtype=torch.float64)
    naive = []
    for b in range(2):
        x, pools = x0[b], []
        for conv in cin.layers:
            w = conv.weight[:, :, 0].view(conv.out_channels, x.shape[0], 3)  # (H_k, H_{k-1}, F)
            nxt = torch.zeros(conv.out_channels, 5, dtype=torch.float64)
            for h in range(conv.out_channels):
                for i in range(x.shape[0]):
                    for j in range(3):
                        nxt[h] += w[h, i, j] * x[i] * x0[b, j]
                nxt[h] += conv.bias[h]
            x = nxt
            pools.append(x.sum(dim=1))
        naive.append(torch.cat(pools))
    torch.testing.assert_close(cin(x0), torch.stack(naive))
    assert cin.out_dim == 6


def test_senet_reweights_fields_by_their_excitation() -> None:
    torch.manual_seed(0)
    se = SENet(6, reduction_ratio=3).double()
    emb = torch.randn(4, 6, 5, dtype=torch.float64)
    w1, w2 = se.excitation[0].weight, se.excitation[2].weight  # (2, 6), (6, 2)
    for b in range(4):
        z = torch.stack([emb[b, f].mean() for f in range(6)])
        a = torch.relu(w2 @ torch.relu(w1 @ z))
        expected = torch.stack([a[f] * emb[b, f] for f in range(6)])
        torch.testing.assert_close(se(emb)[b], expected)


@pytest.mark.parametrize("kind", ["field_all", "field_each", "field_interaction"])
def test_bilinear_interaction_matches_the_pair_loop(kind: str) -> None:
    torch.manual_seed(0)
    bi = BilinearInteraction(4, 3, kind).double()
    emb = torch.randn(2, 4, 3, dtype=torch.float64)
    pairs = list(itertools.combinations(range(4), 2))
    out = bi(emb)
    assert out.shape == (2, 6, 3)
    for b in range(2):
        for p, (i, j) in enumerate(pairs):
            w = bi.weight[{"field_all": 0, "field_each": i, "field_interaction": p}[kind]]
            torch.testing.assert_close(out[b, p], (emb[b, i] @ w) * emb[b, j])


@pytest.mark.parametrize("kind", ["field_all", "field_each", "field_interaction"])
def test_bilinear_matrices_start_as_xavier_linear_layers(kind: str) -> None:
    """Each bilinear matrix starts as FuxiCTR's Xavier-normal ``nn.Linear(D, D)`` would: std
    sqrt(1 / D), whatever their number (Xavier over the stacked (n, D, D) tensor counts fan-in
    D * D and fan-out n * D: std sqrt(2 / (D * (D + n))))."""
    torch.manual_seed(0)
    dim = 32
    bi = BilinearInteraction(10, dim, kind)
    for w in bi.weight:
        assert abs(float(w.std()) / (1 / dim) ** 0.5 - 1) < 0.1


def test_senet_layers_start_xavier_normal() -> None:
    """Both excitation layers start Xavier-normal, as FuxiCTR initialises every linear layer:
    std sqrt(2 / (fan_in + fan_out))."""
    torch.manual_seed(0)
    se = SENet(40, reduction_ratio=2)
    for layer in se.excitation[::2]:
        fan_out, fan_in = layer.weight.shape
        expected = (2 / (fan_in + fan_out)) ** 0.5
        assert abs(float(layer.weight.std()) / expected - 1) < 0.1


def test_dot_interaction_is_every_pair_once() -> None:
    vectors = torch.randn(3, 4, 5, dtype=torch.float64)
    out = DotInteraction(4)(vectors)
    expected = [
        [float(vectors[b, i] @ vectors[b, j]) for i, j in itertools.combinations(range(4), 2)]
        for b in range(3)
    ]
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float64))


def naive_attention(att: FieldSelfAttention, x: torch.Tensor, scale: bool) -> torch.Tensor:
    """AutoInt's layer written per row, field and head."""
    b_n, f_n, _ = x.shape
    dh, heads = att.head_dim, att.num_heads
    wq, wk, wv = (m.weight for m in (att.query, att.key, att.value))
    out = torch.empty(b_n, f_n, dh * heads, dtype=x.dtype)
    for b in range(b_n):
        for m in range(f_n):
            parts = []
            for h in range(heads):
                rows = slice(dh * h, dh * h + dh)
                q = wq[rows] @ x[b, m]
                s = torch.stack([q @ (wk[rows] @ x[b, k]) for k in range(f_n)])
                a = torch.softmax(s / (dh**0.5 if scale else 1.0), dim=0)
                parts.append(sum(a[k] * (wv[rows] @ x[b, k]) for k in range(f_n)))
            res = att.residual.weight @ x[b, m] if att.residual is not None else x[b, m]
            out[b, m] = torch.relu(torch.cat(parts) + res)
    return out


@pytest.mark.parametrize("scale", [False, True])
def test_field_self_attention_matches_the_head_loop(scale: bool) -> None:
    torch.manual_seed(0)
    att = FieldSelfAttention(4, 6, num_heads=2, residual=True, scale=scale).double()
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    assert att(x).shape == (2, 5, 6)
    torch.testing.assert_close(att(x), naive_attention(att, x, scale))
    # equal widths: the residual is the input itself (FuxiCTR), no projection
    same = FieldSelfAttention(6, 6, num_heads=3, scale=scale).double()
    assert same.residual is None
    y = torch.randn(2, 5, 6, dtype=torch.float64)
    torch.testing.assert_close(same(y), naive_attention(same, y, scale))


def test_mask_block_applies_the_instance_mask() -> None:
    torch.manual_seed(0)
    block = MaskBlock(6, 8, 4, reduction_ratio=2.0, layer_norm=True).double()
    assert block.mask[0].out_features == 12  # FuxiCTR: widened from the masked input's width
    v_in, v_emb = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 8, dtype=torch.float64)
    lin1, lin2 = block.mask[0], block.mask[2]
    hidden, norm = block.hidden[0], block.hidden[1]
    for b in range(3):
        mask = lin2.weight @ torch.relu(lin1.weight @ v_emb[b] + lin1.bias) + lin2.bias
        h = hidden.weight @ (mask * v_in[b])
        h = (h - h.mean()) / torch.sqrt(h.var(unbiased=False) + norm.eps) * norm.weight + norm.bias
        torch.testing.assert_close(block(v_in, v_emb)[b], torch.relu(h))


def test_feature_gating_scales_by_twice_the_sigmoid() -> None:
    torch.manual_seed(0)
    gate = FeatureGating(6, 0, [4], dim=3).double()
    flat = torch.randn(2, 6, dtype=torch.float64)
    g = 2 * torch.sigmoid(gate.gate(gate.bias.expand(2, -1)))
    torch.testing.assert_close(gate(flat, None), flat * g)
    ctx_gate = FeatureGating(6, 5, [4], dim=3).double()
    ctx = torch.randn(2, 5, dtype=torch.float64)
    torch.testing.assert_close(ctx_gate(flat, ctx), flat * 2 * torch.sigmoid(ctx_gate.gate(ctx)))


def test_bilinear_fusion_matches_the_head_sum() -> None:
    torch.manual_seed(0)
    fuse = BilinearFusion(4, 6, num_heads=2).double()
    o1, o2 = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    for b in range(3):
        y = (
            fuse.w1.weight[0] @ o1[b]
            + fuse.w1.bias[0]
            + fuse.w2.weight[0] @ o2[b]
            + fuse.w2.bias[0]
        )
        for h in range(2):
            y = y + o1[b, 2 * h : 2 * h + 2] @ fuse.w3[h] @ o2[b, 3 * h : 3 * h + 3]
        torch.testing.assert_close(fuse(o1, o2)[b], y)
    with pytest.raises(ValueError, match="heads"):
        BilinearFusion(5, 6, num_heads=2)
