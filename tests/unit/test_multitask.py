"""Multi-task blocks and losses against naive references (loops over experts, tasks, rows)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ranklab.data.batch import Ragged
from ranklab.data.schema import LabelSpec
from ranklab.losses import BinaryCrossEntropy, EntireSpace, SquaredError
from ranklab.nn.multitask import Experts, ExtractionLayer, Gate, mix


def test_experts_stack_each_mlp() -> None:
    torch.manual_seed(0)
    experts = Experts(6, 3, [8, 4])
    x = torch.randn(5, 6)
    out = experts(x)
    assert out.shape == (5, 3, 4)
    for i, mlp in enumerate(experts.experts):
        torch.testing.assert_close(out[:, i], mlp(x))


def test_gate_is_a_softmax_of_a_linear_map() -> None:
    torch.manual_seed(0)
    gate = Gate(6, 4)
    x = torch.randn(5, 6)
    w = gate(x)
    for r in range(5):
        z = [float(gate.linear.weight[e] @ x[r] + gate.linear.bias[e]) for e in range(4)]
        m = max(z)
        expected = [math.exp(v - m) / sum(math.exp(u - m) for u in z) for v in z]
        torch.testing.assert_close(w[r], torch.tensor(expected), rtol=1e-5, atol=1e-6)


def test_mix_is_the_gated_sum() -> None:
    torch.manual_seed(0)
    experts, weights = torch.randn(4, 3, 5), torch.rand(4, 3)
    naive = torch.stack([sum(weights[b, e] * experts[b, e] for e in range(3)) for b in range(4)])
    torch.testing.assert_close(mix(experts, weights), naive)


@pytest.mark.parametrize("last", [False, True])
def test_extraction_layer_matches_the_ple_equations(last: bool) -> None:
    torch.manual_seed(0)
    layer = ExtractionLayer(
        6, num_tasks=2, num_specific=2, num_shared=3, hidden_units=[4], last=last
    )
    xs, shared_x = [torch.randn(5, 6), torch.randn(5, 6)], torch.randn(5, 6)
    outs, shared_out = layer(xs, shared_x)
    shared_experts = [e(shared_x) for e in layer.shared.experts]  # 3 x (5, 4)
    for k in range(2):
        own = [e(xs[k]) for e in layer.specific[k].experts]
        g = torch.softmax(layer.gates[k].linear(xs[k]), dim=-1)  # (5, 5)
        naive = sum(g[:, i : i + 1] * h for i, h in enumerate(own + shared_experts))
        torch.testing.assert_close(outs[k], naive)
    if last:
        assert shared_out is None
    else:
        every = [e(xs[k]) for k in range(2) for e in layer.specific[k].experts] + shared_experts
        g = torch.softmax(layer.shared_gate.linear(shared_x), dim=-1)  # (5, 7)
        naive = sum(g[:, i : i + 1] * h for i, h in enumerate(every))
        torch.testing.assert_close(shared_out, naive)


def test_conditional_losses_use_the_observed_rows() -> None:
    torch.manual_seed(0)
    logits = {"click": torch.randn(8), "conversion": torch.randn(8)}
    click = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0], dtype=torch.float32)
    conv = torch.tensor([1, 0, 0, 1, 0, 0, 0, 0], dtype=torch.float32)
    labels = {"click": click, "conversion": conv}
    spec = LabelSpec("conversion", condition="click")
    rows = [i for i in range(8) if click[i] == 1]
    naive = -sum(
        conv[i] * math.log(torch.sigmoid(logits["conversion"][i]))
        + (1 - conv[i]) * math.log(1 - torch.sigmoid(logits["conversion"][i]))
        for i in rows
    ) / len(rows)
    assert float(BinaryCrossEntropy()(logits, labels, spec)) == pytest.approx(
        float(naive), rel=1e-5
    )
    mse = SquaredError()(logits, labels, spec)
    naive_mse = sum((logits["conversion"][i] - conv[i]) ** 2 for i in rows) / len(rows)
    assert float(mse) == pytest.approx(float(naive_mse), rel=1e-5)
    # no observed row: zero, with a graph
    none = BinaryCrossEntropy()(logits, {"click": torch.zeros(8), "conversion": conv}, spec)
    assert float(none) == 0.0


def test_entire_space_loss_is_bce_of_the_product() -> None:
    torch.manual_seed(0)
    logits = {"click": torch.randn(50), "conversion": torch.randn(50)}
    click = (torch.rand(50) < 0.5).float()
    conv = click * (torch.rand(50) < 0.3).float()
    p = torch.sigmoid(logits["click"]) * torch.sigmoid(logits["conversion"])
    naive = F.binary_cross_entropy(p, click * conv)
    got = EntireSpace()(
        logits, {"click": click, "conversion": conv}, LabelSpec("conversion", condition="click")
    )
    assert float(got) == pytest.approx(float(naive), rel=1e-5)


def test_ragged_take_matches_a_loop() -> None:
    rows = [[3, 4], [], [5], [6, 7, 8]]
    offsets = torch.tensor([0, 2, 2, 3, 6])
    r = Ragged(torch.tensor([3, 4, 5, 6, 7, 8]), offsets)
    assert r.rows().tolist() == [0, 0, 2, 3, 3, 3]
    picked = r.take(torch.tensor([3, 1, 0]))
    assert [
        picked.values[a:b].tolist() for a, b in zip(picked.offsets[:-1], picked.offsets[1:])
    ] == [
        rows[3],
        rows[1],
        rows[0],
    ]
    sliced = r.take(slice(1, 4))
    assert sliced.offsets.tolist() == [0, 0, 1, 4] and sliced.values.tolist() == [5, 6, 7, 8]
    assert r.dense().tolist() == [[3, 4, 0], [0, 0, 0], [5, 0, 0], [6, 7, 8]]
