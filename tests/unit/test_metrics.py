"""Metrics against naive references (pairwise AUC, per-group loops)."""

from __future__ import annotations

import math

import pytest
import torch

from ranklab.metrics import CTRMetrics, auc, grouped_auc, logloss


def naive_auc(p: list[float], y: list[int]) -> float:
    pos = [s for s, t in zip(p, y) if t == 1]
    neg = [s for s, t in zip(p, y) if t == 0]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def naive_gauc(p: list[float], y: list[int], g: list[int]) -> float:
    num = den = 0.0
    for grp in sorted(set(g)):
        idx = [i for i, x in enumerate(g) if x == grp]
        ys = [y[i] for i in idx]
        if 0 < sum(ys) < len(ys):
            num += len(idx) * naive_auc([p[i] for i in idx], ys)
            den += len(idx)
    return num / den


@pytest.fixture
def data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    p = torch.randint(0, 8, (300,), generator=g).double() / 8  # many ties
    y = (torch.rand(300, generator=g) < 0.2 + 0.6 * p).long()
    groups = torch.randint(0, 25, (300,), generator=g)
    return p, y, groups


def test_auc_matches_pairwise_with_ties(data) -> None:
    p, y, _ = data
    assert auc(p, y) == pytest.approx(naive_auc(p.tolist(), y.tolist()), abs=1e-7)


def test_grouped_auc_matches_loop_and_skips_one_class_groups(data) -> None:
    p, y, g = data
    y = y.clone()
    y[g == 0] = 1  # a one-class group must be skipped, not scored 0
    y[g == 1] = 0
    assert grouped_auc(p, y, g) == pytest.approx(
        naive_gauc(p.tolist(), y.tolist(), g.tolist()), abs=1e-12
    )


def test_grouped_auc_no_valid_group_is_nan() -> None:
    assert math.isnan(grouped_auc(torch.rand(4), torch.ones(4), torch.tensor([0, 0, 1, 1])))


def test_ctr_metrics_accumulate_batches_like_whole(data) -> None:
    p, y, g = data
    probs = p.float().clamp(0.01, 0.99)
    m = CTRMetrics(grouped=True)
    for i in range(0, 300, 64):
        m.update(probs[i : i + 64], y[i : i + 64].float(), g[i : i + 64])
    out = m.compute()
    assert list(out) == ["auc", "calibration", "logloss", "ne", "gauc"]  # as reports show them
    assert out["auc"] == pytest.approx(naive_auc(probs.tolist(), y.tolist()), abs=1e-6)
    assert out["gauc"] == pytest.approx(
        naive_gauc(probs.tolist(), y.tolist(), g.tolist()), abs=1e-9
    )
    ll = (
        -sum(math.log(q) if t else math.log(1 - q) for q, t in zip(probs.tolist(), y.tolist()))
        / 300
    )
    assert out["logloss"] == pytest.approx(ll, rel=1e-9)
    assert logloss(probs, y) == pytest.approx(ll, rel=1e-9)
    r = y.double().mean().item()
    assert out["ne"] == pytest.approx(ll / -(r * math.log(r) + (1 - r) * math.log(1 - r)), rel=1e-9)
    assert out["calibration"] == pytest.approx(
        probs.double().sum().item() / y.sum().item(), rel=1e-9
    )
    m.reset()
    m.update(probs[:10], y[:10].float(), g[:10])
    assert m.compute()["calibration"] == pytest.approx(
        probs[:10].double().sum().item() / y[:10].sum().item()
    )


def test_ctr_metrics_auc_of_one_class_is_nan_not_zero() -> None:
    """torchmetrics says 0.0 (with a warning) when the labels hold one class: undefined, so
    NaN, written as null in metrics.json."""
    for label in (0.0, 1.0):
        m = CTRMetrics()
        m.update(torch.rand(50), torch.full((50,), label))
        assert math.isnan(m.compute()["auc"])
    m = CTRMetrics()
    m.update(torch.tensor([0.2, 0.8]), torch.tensor([0.0, 1.0]))
    assert m.compute()["auc"] == 1.0
