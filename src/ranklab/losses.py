"""Losses as small modules, chosen in config.

Ranking (per label): ``loss(logits, labels, spec) -> scalar``, where ``logits`` and ``labels`` are
dicts by label name (a loss may read another label: a conditional label's condition, ESMM's
parent). The default for a label follows its kind: :class:`BinaryCrossEntropy` or
:class:`SquaredError`, over the rows where the label is observed (its condition holds).

Retrieval: ``loss(states (N, D), targets (N,), items (V, D), context) -> scalar`` for the N
history positions that predict a next item: :class:`OneNegativeBCE` (the SASRec paper),
:class:`SampledSoftmax`, :class:`FullSoftmax`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ranklab.data.schema import FIRST_ID, LabelSpec
from ranklab.samplers import NegativeSampler, Uniform


def observed(labels: dict[str, Tensor], spec: LabelSpec) -> Tensor | None:
    """(B,) bool: the rows where ``spec``'s label is observed; None when it always is."""
    if spec.condition is None:
        return None
    return labels[spec.condition] > 0.5


class LabelLoss(nn.Module):
    """Base of the ranking losses: ``forward(logits, labels, spec) -> scalar``."""

    def check(self, spec: LabelSpec, trained: Sequence[str]) -> str | None:
        """Why this loss cannot train label ``spec`` beside the ``trained`` labels (None: it
        can); asked when the task is built, before any data is read by a step."""
        return None

    def forward(
        self, logits: dict[str, Tensor], labels: dict[str, Tensor], spec: LabelSpec
    ) -> Tensor:
        raise NotImplementedError


class _Observed(LabelLoss):
    """A pointwise loss averaged over the rows where the label is observed (0 if none is)."""

    def pointwise(self, logit: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(
        self, logits: dict[str, Tensor], labels: dict[str, Tensor], spec: LabelSpec
    ) -> Tensor:
        logit, target = logits[spec.name], labels[spec.name]
        rows = observed(labels, spec)
        if rows is None:
            return self.pointwise(logit, target)
        if not bool(rows.any()):
            return logit.sum() * 0.0  # keeps the graph (and DDP) intact
        return self.pointwise(logit[rows], target[rows])


class BinaryCrossEntropy(_Observed):
    """Mean binary cross-entropy of the logits (B,) against 0/1 targets (B,)."""

    def pointwise(self, logit: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(logit, target)


class SquaredError(_Observed):
    """Mean squared error of the outputs (B,) against real targets (B,)."""

    def pointwise(self, logit: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(logit, target)


class EntireSpace(LabelLoss):
    """ESMM (Ma et al., SIGIR 2018): a conditional label (conversion, observed after a click)
    trained over every row through the joint event: pJoint = p(condition) * p(label |
    condition) against condition * label, binary cross-entropy. The conditional model is
    never fit on the biased subset of clicked rows alone. logits: the condition's and the
    label's (B,) each; computed in log space for stability."""

    def check(self, spec: LabelSpec, trained: Sequence[str]) -> str | None:
        if spec.condition is None:
            return f"EntireSpace needs a conditional label, and '{spec.name}' has no condition"
        if spec.condition not in trained:
            return (
                f"EntireSpace trains '{spec.name}' through its condition '{spec.condition}', "
                f"which this run does not train (task.labels: {list(trained)})"
            )
        return None

    def forward(
        self, logits: dict[str, Tensor], labels: dict[str, Tensor], spec: LabelSpec
    ) -> Tensor:
        if spec.condition is None:
            raise ValueError(f"EntireSpace needs a conditional label, '{spec.name}' has none")
        log_p = F.logsigmoid(logits[spec.condition]) + F.logsigmoid(logits[spec.name])  # (B,)
        log_not = torch.log1p(-torch.exp(log_p).clamp(max=1 - 1e-7))
        y = labels[spec.condition] * labels[spec.name]
        return -(y * log_p + (1 - y) * log_not).mean()


def default_loss(spec: LabelSpec) -> LabelLoss:
    return BinaryCrossEntropy() if spec.kind == "binary" else SquaredError()


# -- retrieval -------------------------------------------------------------------------------
@dataclass
class RetrievalBatch:
    """What a retrieval loss may need besides the states: for each of the N positions, its
    row in the batch (N,), and each row's items (the user's seen items and the next items,
    as sorted keys ``row * n_items + item`` (M,)), so that negatives avoid them."""

    rows: Tensor
    user_items: Tensor
    n_items: int

    def is_users(self, rows: Tensor, items: Tensor) -> Tensor:
        """(K,) rows, (K,) items -> (K,) bool: the item is one of that row's items."""
        keys = rows * self.n_items + items
        pos = torch.searchsorted(self.user_items, keys).clamp(max=self.user_items.numel() - 1)
        return self.user_items[pos] == keys


class RetrievalLoss(nn.Module):
    """Base: ``forward(states (N, D), targets (N,), items (V, D), batch) -> scalar``."""

    def forward(
        self, states: Tensor, targets: Tensor, items: Tensor, batch: RetrievalBatch
    ) -> Tensor:
        raise NotImplementedError


class OneNegativeBCE(RetrievalLoss):
    """The SASRec paper's loss: the next item against one sampled negative that is not one of
    the user's items, binary cross-entropy on both."""

    def __init__(self, sampler: NegativeSampler | None = None, retries: int = 10) -> None:
        super().__init__()
        self.sampler = sampler or Uniform()
        self.retries = retries

    def forward(
        self, states: Tensor, targets: Tensor, items: Tensor, batch: RetrievalBatch
    ) -> Tensor:
        neg = self.sampler.sample(targets.shape[0], items.shape[0], targets)  # (N,)
        for _ in range(self.retries):  # resample collisions (few: a user's items are rare)
            clash = batch.is_users(batch.rows, neg)
            if not clash.any():
                break
            neg[clash] = self.sampler.sample(int(clash.sum()), items.shape[0], targets[clash])
        pos_logit = (states * items[targets]).sum(-1)
        neg_logit = (states * items[neg]).sum(-1)
        return F.binary_cross_entropy_with_logits(
            pos_logit, torch.ones_like(pos_logit)
        ) + F.binary_cross_entropy_with_logits(neg_logit, torch.zeros_like(neg_logit))


class SampledSoftmax(RetrievalLoss):
    """Softmax over the next item and ``num_negatives`` items drawn once per batch and shared by
    every position; a negative equal to the position's own target is masked."""

    def __init__(self, num_negatives: int = 100, sampler: NegativeSampler | None = None) -> None:
        super().__init__()
        self.num_negatives = int(num_negatives)
        self.sampler = sampler or Uniform()

    def forward(
        self, states: Tensor, targets: Tensor, items: Tensor, batch: RetrievalBatch
    ) -> Tensor:
        negs = self.sampler.sample(self.num_negatives, items.shape[0], targets)  # (K,)
        neg_logits = states @ items[negs].T  # (N, K)
        neg_logits = neg_logits.masked_fill(negs.unsqueeze(0) == targets.unsqueeze(1), -torch.inf)
        logits = torch.cat([(states * items[targets]).sum(-1, keepdim=True), neg_logits], dim=1)
        return F.cross_entropy(logits, torch.zeros_like(targets))


class FullSoftmax(RetrievalLoss):
    """Softmax over the whole catalogue (real ids): one (N, V) product per batch."""

    def forward(
        self, states: Tensor, targets: Tensor, items: Tensor, batch: RetrievalBatch
    ) -> Tensor:
        return F.cross_entropy(states @ items[FIRST_ID:].T, targets - FIRST_ID)


# names the retrieval task accepts for task.loss besides a {_target_: ...} mapping
RETRIEVAL_LOSSES = {
    "bce": OneNegativeBCE,
    "sampled_softmax": SampledSoftmax,
    "full_ce": FullSoftmax,
}
