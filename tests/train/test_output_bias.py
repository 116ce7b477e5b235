"""``task.output_bias=base_rate``: each binary label's logit starts at the log-odds of its
training rate. Checked against the naive reference (LR with its own bias initialised there:
the same training, step by step) and on rare positives, where it is meant to help."""

from __future__ import annotations

import math

import pytest
import torch

from ranklab.errors import ConfigError
from ranklab.train import build, train


def _steps(task: torch.nn.Module, batches: list, n: int = 5) -> list[torch.Tensor]:
    opt = torch.optim.Adam(task.model.parameters(), lr=1e-2)
    out = []
    for b in batches[:n]:
        opt.zero_grad()
        logits, _ = task._logits(b.features)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits["label"], b.label)
        loss.backward()
        opt.step()
        out.append(task.predictions(b.features)["label"].detach())
    return out


def test_the_offset_is_an_output_bias_initialised_at_the_log_odds(make_cfg) -> None:
    torch.manual_seed(0)
    dm, _, task = build(make_cfg("model=lr", "task.output_bias=base_rate"))
    rate = float(dm.labels("train")["label"].mean())
    assert task.offsets == {"label": pytest.approx(math.log(rate / (1 - rate)))}
    torch.manual_seed(0)
    _, ref_model, ref = build(make_cfg("model=lr"))  # the same initial weights
    assert ref.offsets == {}
    with torch.no_grad():
        ref_model.linear.bias += task.offsets["label"]
    batches = list(dm.train_dataloader())
    # at the start the mean prediction is the training rate, not 0.5
    first = task.predictions(batches[0].features)["label"].detach()
    assert abs(float(first.mean()) - rate) < 0.01
    for a, b in zip(_steps(task, batches), _steps(ref, batches), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_rare_positives_train_with_the_offset_and_the_option_is_checked(make_cfg) -> None:
    rare = ("model=lr", "data.source.base_rate=0.01", "trainer.max_epochs=1")
    m = train(make_cfg(*rare, "task.output_bias=base_rate"))
    assert 0.5 < m["test"]["calibration"] < 2.0
    with pytest.raises(ConfigError, match=r"task\.output_bias"):
        build(make_cfg("model=lr", "task.output_bias=mean"))
