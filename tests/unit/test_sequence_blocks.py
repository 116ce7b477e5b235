"""Sequence blocks against naive references: plain loops over rows and over unpadded steps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ranklab.data.schema import Feature, Schema
from ranklab.errors import SchemaError
from ranklab.nn import (
    AUGRU,
    MLP,
    AUGRUCell,
    Dice,
    LocalActivationUnit,
    MaskedGRU,
    RecencyEmbedding,
    TransformerBlock,
)
from ranklab.nn.mlp import activation
from ranklab.nn.sequence import (
    history_fields,
    last_k,
    masked_max,
    masked_mean,
    masked_softmax,
    transact_pool,
)

B, L, D = 5, 7, 4
LENGTHS = [7, 3, 1, 5, 0]  # row 4 has no history at all


def left_padded_mask(lengths: list[int], width: int) -> torch.Tensor:
    """(B, width) bool, the last ``lengths[b]`` steps of row b valid."""
    return torch.arange(width)[None, :] >= (width - torch.tensor(lengths))[:, None]


@pytest.fixture
def mask() -> torch.Tensor:
    return left_padded_mask(LENGTHS, L)


def test_dice_matches_formula_in_training_and_eval() -> None:
    torch.manual_seed(0)
    dice = Dice(3).double()
    nn.init.normal_(dice.alpha)
    x = torch.randn(6, 4, 3, dtype=torch.float64)  # (..., D): statistics over 24 rows
    flat = x.reshape(-1, 3)
    mean, var = flat.mean(0), flat.var(0, unbiased=False)
    p = torch.sigmoid((x - mean) / torch.sqrt(var + 1e-8))
    torch.testing.assert_close(dice(x), p * x + (1 - p) * dice.alpha * x)
    dice.eval()  # running statistics: after one update, 0.9 * (0, 1) + 0.1 * batch's
    run_mean, run_var = 0.1 * mean, 0.9 + 0.1 * flat.var(0, unbiased=True)
    p = torch.sigmoid((x - run_mean) / torch.sqrt(run_var + 1e-8))
    torch.testing.assert_close(dice(x), p * x + (1 - p) * dice.alpha * x)


def test_dice_mlp_has_a_dice_of_each_hidden_width() -> None:
    net = MLP(6, [8, 5], 1, act="dice")
    dices = [m for m in net if isinstance(m, Dice)]
    assert [d.alpha.shape[0] for d in dices] == [8, 5]
    assert not any(isinstance(m, nn.ReLU) for m in net)
    assert net(torch.randn(3, 6)).shape == (3, 1)
    assert any(isinstance(m, nn.ReLU) for m in MLP(6, [8], 1, act="relu"))
    with pytest.raises(ValueError, match="needs the layer width"):
        activation("dice")


def test_local_activation_unit_matches_row_loop(mask: torch.Tensor) -> None:
    torch.manual_seed(0)
    unit = LocalActivationUnit(D, [6], side_dim=2, act="relu").double().eval()
    q = torch.randn(B, D, dtype=torch.float64)
    k = torch.randn(B, L, D, dtype=torch.float64)
    s = torch.randn(B, L, 2, dtype=torch.float64)
    naive = torch.zeros(B, L, dtype=torch.float64)
    for b in range(B):
        for t in range(L):
            if mask[b, t]:
                x = torch.cat([q[b], k[b, t], q[b] - k[b, t], q[b] * k[b, t], s[b, t]])
                naive[b, t] = unit.mlp(x[None])[0, 0]
    torch.testing.assert_close(unit(q, k, mask, s), naive)


def test_local_activation_unit_in_training_ignores_padding(mask: torch.Tensor) -> None:
    """With Dice in training, batch statistics are the valid steps' own: more left padding
    changes nothing (Dice normalised over every (b, l), padding included, so the weights and the
    running statistics moved with the batch's width), and one or no valid step still runs."""
    torch.manual_seed(0)
    unit = LocalActivationUnit(D, [6], act="dice").double().train()
    q, k = torch.randn(B, D, dtype=torch.float64), torch.randn(B, L, D, dtype=torch.float64)
    wide = torch.cat([torch.randn(B, 5, D, dtype=torch.float64), k], dim=1)  # 5 more pad steps
    wide_mask = torch.cat([torch.zeros(B, 5, dtype=torch.bool), mask], dim=1)
    w = unit(q, k, mask)
    stats = unit.mlp[1].norm.running_mean.clone()
    torch.testing.assert_close(unit(q, wide, wide_mask)[:, 5:], w)
    torch.testing.assert_close(unit.mlp[1].norm.running_mean, 0.9 * stats + 0.1 * stats / 0.1)
    x = torch.cat([q[:, None].expand_as(k), k, q[:, None] - k, q[:, None] * k], -1)[mask]
    mean = unit.mlp[0](x).mean(0)  # the batch statistics are those of the valid steps
    torch.testing.assert_close(stats, 0.1 * mean)
    one = torch.zeros(B, L, dtype=torch.bool)
    one[0, -1] = True
    assert unit(q, k, one)[~one].eq(0).all() and unit(q, k, one).isfinite().all()
    assert unit(q, k, torch.zeros_like(one)).eq(0).all()
    # under mixed precision the scores come in autocast's dtype (indexing them into a float32
    # zeros tensor failed: trainer.precision=bf16-mixed could not run DIN)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert LocalActivationUnit(D, [6]).float()(q.float(), k.float(), mask).shape == (B, L)


def test_masked_pooling_matches_loops(mask: torch.Tensor) -> None:
    torch.manual_seed(0)
    x = torch.randn(B, L, D, dtype=torch.float64)
    scores = torch.randn(B, L, dtype=torch.float64)
    for b, n in enumerate(LENGTHS):
        valid = x[b, L - n :]
        mean = valid.mean(0) if n else torch.zeros(D, dtype=torch.float64)
        mx = valid.amax(0) if n else torch.zeros(D, dtype=torch.float64)
        torch.testing.assert_close(masked_mean(x, mask)[b], mean)
        torch.testing.assert_close(masked_max(x, mask)[b], mx)
        soft = torch.zeros(L, dtype=torch.float64)
        if n:
            soft[L - n :] = torch.softmax(scores[b, L - n :], 0)
        torch.testing.assert_close(masked_softmax(scores, mask)[b], soft)


@pytest.mark.parametrize("k", [3, 10])  # K below and above the width L
def test_transact_pool_matches_loop(mask: torch.Tensor, k: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(B, L, D, dtype=torch.float64)
    out = transact_pool(x, mask, k)
    assert out.shape == (B, (k + 1) * D)
    for b, n in enumerate(LENGTHS):
        mx = torch.zeros(D, dtype=torch.float64)
        if n:
            mx = torch.stack([x[b, t] for t in range(L - n, L)]).amax(0)
        recent = [torch.zeros(D, dtype=torch.float64) for _ in range(k)]  # oldest first
        for j in range(min(k, n)):  # j steps back from the most recent
            recent[k - 1 - j] = x[b, L - 1 - j]
        torch.testing.assert_close(out[b], torch.cat([mx, *recent]))
    torch.testing.assert_close(last_k(x, mask, k), out[:, D:].view(B, k, D))


def test_masked_gru_matches_loop_on_unpadded_sequence(mask: torch.Tensor) -> None:
    torch.manual_seed(0)
    gru = MaskedGRU(3, D).double()
    x = torch.randn(B, L, 3, dtype=torch.float64)
    states = gru(x, mask)
    assert states.shape == (B, L, D)
    for b, n in enumerate(LENGTHS):
        h = torch.zeros(1, D, dtype=torch.float64)
        for t in range(L - n, L):  # the valid steps only
            h = gru.cell(x[b, t][None], h)
            torch.testing.assert_close(states[b, t], h[0])
        torch.testing.assert_close(states[b, : L - n], torch.zeros(L - n, D, dtype=torch.float64))
    # and a reference GRU: torch's nn.GRU over the unpadded sequence, same weights
    ref = nn.GRU(3, D, batch_first=True).double()
    ref.load_state_dict({f"{k}_l0": v for k, v in gru.cell.state_dict().items()})
    out, _ = ref(x[:1])  # row 0 is unpadded
    torch.testing.assert_close(states[0], out[0])


def test_augru_matches_paper_equations_on_unpadded_sequence(mask: torch.Tensor) -> None:
    torch.manual_seed(0)
    net = AUGRU(3, D).double()
    x = torch.randn(B, L, 3, dtype=torch.float64)
    att = torch.rand(B, L, dtype=torch.float64)
    Wx, bx = net.cell.x_gates.weight, net.cell.x_gates.bias
    Wh, bh = net.cell.h_gates.weight, net.cell.h_gates.bias
    out = net(x, att, mask)
    for b, n in enumerate(LENGTHS):
        h = torch.zeros(D, dtype=torch.float64)
        for t in range(L - n, L):
            gx, gh = Wx @ x[b, t] + bx, Wh @ h + bh  # (3D,): reset, update, candidate
            r = torch.sigmoid(gx[:D] + gh[:D])
            u = att[b, t] * torch.sigmoid(gx[D : 2 * D] + gh[D : 2 * D])  # eq. 5
            cand = torch.tanh(gx[2 * D :] + r * gh[2 * D :])
            h = (1 - u) * h + u * cand  # eq. 6
        torch.testing.assert_close(out[b], h)


def test_augru_with_unit_attention_is_a_gru() -> None:
    torch.manual_seed(0)
    cell = AUGRUCell(3, D).double()
    ref = nn.GRUCell(3, D).double()
    with torch.no_grad():
        ref.weight_ih.copy_(cell.x_gates.weight)
        ref.bias_ih.copy_(cell.x_gates.bias)
        ref.weight_hh.copy_(cell.h_gates.weight)
        ref.bias_hh.copy_(cell.h_gates.bias)
    x, h = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, D, dtype=torch.float64)
    # torch orders the gates (reset, update, new) and keeps z * h: our update gate is 1 - z
    with torch.no_grad():
        for w in (ref.weight_ih, ref.bias_ih, ref.weight_hh, ref.bias_hh):
            w[D : 2 * D].neg_()
    torch.testing.assert_close(cell(x, h, torch.ones(6, dtype=torch.float64)), ref(x, h))


def test_transformer_block_ignores_padding_and_matches_manual_attention() -> None:
    torch.manual_seed(0)
    block = TransformerBlock(D, num_heads=2, dim_feedforward=8, dropout=0.3).double().eval()
    lengths = [5, 2, 1, 4, 0]
    x = torch.randn(B, 5, D, dtype=torch.float64)
    mask = left_padded_mask(lengths, 5)
    out = block(x, mask)
    # four more columns of left padding (arbitrary values there) change no valid output
    wide = torch.cat([torch.randn(B, 4, D, dtype=torch.float64), x], dim=1)
    out_wide = block(wide, left_padded_mask(lengths, 9))
    for b, n in enumerate(lengths):
        torch.testing.assert_close(out_wide[b, 9 - n :], out[b, 5 - n :])
    assert torch.isfinite(out).all()  # the row with no valid step gives no NaN
    # manual multi-head attention over each row's valid steps only
    Wq, Wk, Wv = block.qkv.weight.chunk(3)
    bq, bk, bv = block.qkv.bias.chunk(3)
    for b, n in enumerate(lengths[:4]):
        xv = x[b, 5 - n :]  # (n, D)
        heads = []
        for h in range(2):
            sl = slice(2 * h, 2 * h + 2)
            q, k, v = (xv @ Wq.T + bq)[:, sl], (xv @ Wk.T + bk)[:, sl], (xv @ Wv.T + bv)[:, sl]
            heads.append(torch.softmax(q @ k.T / 2**0.5, dim=-1) @ v)
        y = block.norm1(xv + block.proj(torch.cat(heads, dim=1)))
        y = block.norm2(y + block.ffn(y))
        torch.testing.assert_close(out[b, 5 - n :], y)
    with pytest.raises(ValueError, match="num_heads"):
        TransformerBlock(6, num_heads=4, dim_feedforward=8)


def test_recency_embedding_counts_from_the_right() -> None:
    pos = RecencyEmbedding(6, 3)
    w = pos.embedding.weight
    torch.testing.assert_close(pos(4), torch.stack([w[3], w[2], w[1], w[0]]))
    torch.testing.assert_close(pos(6)[-4:], pos(4))
    with pytest.raises(ValueError, match="max_len"):
        pos(7)


def test_history_fields_pairs_targets_and_names_what_is_missing() -> None:
    feats = (
        Feature("user", "categorical", vocab_size=5),
        Feature("item", "categorical", vocab_size=9),
        Feature("cate", "categorical", vocab_size=4),
        Feature("hist_item", "sequence", vocab_size=9, table="item", max_len=3),
        Feature(
            "hist_cate", "sequence", vocab_size=4, table="cate", max_len=3, sequence="hist_item"
        ),
        Feature("hist_action", "sequence", vocab_size=5, max_len=3, sequence="hist_item"),
    )
    f = history_fields(Schema(feats), None, "M")
    assert f.history == "hist_item"
    assert f.paired == (("hist_item", "item"), ("hist_cate", "cate"))
    assert f.side == ("hist_action",)
    with pytest.raises(SchemaError, match="needs feature 'nope'"):
        history_fields(Schema(feats), "nope", "M")
    with pytest.raises(SchemaError, match="side field"):
        history_fields(Schema(feats), "hist_cate", "M")
    with pytest.raises(SchemaError, match="has no target"):
        history_fields(Schema((feats[0], feats[3])), None, "M")
    with pytest.raises(SchemaError, match="has no sequence"):
        history_fields(Schema(feats[:3]), None, "M")
