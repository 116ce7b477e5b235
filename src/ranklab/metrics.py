"""Metrics for CTR and ranking, as torchmetrics ``Metric`` objects (DDP-aware) plus functionals.

torchmetrics provides AUROC; it has no log loss, normalized entropy, calibration ratio or a
grouped AUC that skips one-class groups (its ``RetrievalAUROC`` scores such groups 0, which
biases the mean), so those are written here on the same ``Metric`` base.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.classification import BinaryAUROC
from torchmetrics.functional.classification import binary_auroc
from torchmetrics.utilities import dim_zero_cat

EPS = 1e-7  # probability clipping for log loss, as scikit-learn and FuxiCTR do


def auc(preds: Tensor, target: Tensor) -> float:
    """Exact ROC AUC of scores ``preds`` (N,) for binary ``target`` (N,)."""
    return float(binary_auroc(preds.double(), target.long()))


def logloss(probs: Tensor, target: Tensor) -> float:
    """Mean binary cross-entropy of probabilities ``probs`` (N,)."""
    p = probs.double().clamp(EPS, 1 - EPS)
    t = target.double()
    return float(-(t * p.log() + (1 - t) * (1 - p).log()).mean())


def bayes_metrics(prob: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """The Bayes-optimal figures of a split: AUC and log loss of the true probabilities
    ``prob`` (N,) against the drawn labels ``label`` (N,), and the base rate."""

    def tensor(a: np.ndarray) -> Tensor:  # read-only maps are copied, other arrays shared
        shared = a.flags.writeable and a.flags.c_contiguous
        return torch.from_numpy(a) if shared else torch.tensor(a)

    p, y = tensor(prob), tensor(label)
    return {"auc": auc(p, y), "logloss": logloss(p, y), "base_rate": float(label.mean())}


def grouped_auc(preds: Tensor, target: Tensor, groups: Tensor) -> float:
    """Impression-weighted mean AUC over groups that hold both classes (DIN paper, eq. 9).

    Vectorised: sort by (group, score), give tied scores their mid-rank inside the group, and
    apply the Mann-Whitney formula per group. preds, target, groups: (N,). Returns NaN when
    no group holds both classes.
    """
    p, y, g = preds.double(), target.double(), groups.long()
    order = torch.argsort(p, stable=True)
    order = order[torch.argsort(g[order], stable=True)]  # lexicographic (group, score)
    p, y, g = p[order], y[order], g[order]
    n = p.numel()
    if n == 0:
        return math.nan
    first = torch.ones(n, dtype=torch.bool, device=p.device)
    new_group = first.clone()
    new_group[1:] = g[1:] != g[:-1]
    new_block = new_group.clone()
    new_block[1:] |= p[1:] != p[:-1]
    idx = torch.arange(n, device=p.device)
    group_start = torch.cummax(torch.where(new_group, idx, torch.zeros_like(idx)), 0).values
    rank = (idx - group_start + 1).double()  # 1-based rank inside the group
    block = torch.cumsum(new_block.long(), 0) - 1
    n_blocks = int(block[-1]) + 1
    lo = torch.full((n_blocks,), math.inf, dtype=torch.double, device=p.device)
    hi = torch.full((n_blocks,), -math.inf, dtype=torch.double, device=p.device)
    lo = lo.scatter_reduce(0, block, rank, "amin")
    hi = hi.scatter_reduce(0, block, rank, "amax")
    midrank = ((lo + hi) / 2)[block]
    gid = torch.cumsum(new_group.long(), 0) - 1
    n_groups = int(gid[-1]) + 1
    size = torch.bincount(gid, minlength=n_groups).double()
    pos = torch.zeros(n_groups, dtype=torch.double, device=p.device).index_add_(0, gid, y)
    rank_pos = torch.zeros(n_groups, dtype=torch.double, device=p.device).index_add_(
        0, gid, midrank * y
    )
    neg = size - pos
    ok = (pos > 0) & (neg > 0)
    if not bool(ok.any()):
        return math.nan
    auc_g = (rank_pos[ok] - pos[ok] * (pos[ok] + 1) / 2) / (pos[ok] * neg[ok])
    return float((auc_g * size[ok]).sum() / size[ok].sum())


def reliability(probs: Tensor, target: Tensor, bins: int = 10) -> dict[str, list[float]]:
    """Reliability-diagram points: the rows sorted by predicted probability and cut into ``bins``
    bins of (nearly) equal size; per bin the mean prediction, the observed positive rate and the
    row count. Equal-mass bins, because click probabilities crowd near 0 and equal-width bins
    would leave most of them empty. probs, target: (N,)."""
    order = torch.argsort(probs.detach().double(), stable=True)
    p, y = probs.detach().double()[order], target.detach().double()[order]
    out: dict[str, list[float]] = {"mean_pred": [], "pos_rate": [], "count": []}
    for ps, ys in zip(torch.tensor_split(p, bins), torch.tensor_split(y, bins)):
        if ps.numel():
            out["mean_pred"].append(float(ps.mean()))
            out["pos_rate"].append(float(ys.mean()))
            out["count"].append(float(ps.numel()))
    return out


class CTRSums(Metric):
    """Log loss, NE and calibration from four sums taken in one pass (cheap, exact under DDP).

    ``compute()`` -> ``calibration`` (mean prediction / mean label: 1 is calibrated, above 1
    over-predicts clicks), ``logloss`` (mean binary cross-entropy) and ``ne`` (log loss divided
    by the entropy of the evaluated set's click rate, He et al. 2014: below 1 is better than
    predicting the base rate for every impression). One metric rather than three: each would
    take the same logarithms of every prediction.
    """

    full_state_update = False
    higher_is_better: bool | None = None

    def __init__(self) -> None:
        super().__init__()
        self.add_state("bce", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("pred", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("pos", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, probs: Tensor, target: Tensor) -> None:
        """probs (B,) predicted probabilities, target (B,) 0/1 labels."""
        p = probs.detach().double().clamp(EPS, 1 - EPS)
        t = target.detach().double()
        self.bce += -(t * p.log() + (1 - t) * (1 - p).log()).sum()
        self.pred += p.sum()
        self.pos += t.sum()
        self.n += t.numel()

    def compute(self) -> dict[str, Tensor]:
        r = (self.pos / self.n).clamp(EPS, 1 - EPS)
        loss = self.bce / self.n
        return {
            "calibration": self.pred / self.pos,
            "logloss": loss,
            "ne": loss / -(r * r.log() + (1 - r) * (1 - r).log()),
        }


class GroupedAUC(Metric):
    """Impression-weighted AUC over groups (e.g. users) with both classes; see grouped_auc."""

    full_state_update = False
    higher_is_better = True

    def __init__(self) -> None:
        super().__init__()
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")
        self.add_state("groups", default=[], dist_reduce_fx="cat")

    def update(self, probs: Tensor, target: Tensor, groups: Tensor) -> None:
        self.preds.append(probs.detach())
        self.target.append(target.detach())
        self.groups.append(groups.detach())

    def compute(self) -> Tensor:
        v = grouped_auc(
            dim_zero_cat(self.preds), dim_zero_cat(self.target), dim_zero_cat(self.groups)
        )
        return torch.tensor(v, dtype=torch.float64)


class CTRMetrics(torch.nn.Module):
    """AUC, log loss, NE, calibration and (when groups are given) grouped AUC, together.

    ``update(probs (B,), target (B,), groups (B,) | None)``; ``compute()`` -> name -> float.
    """

    def __init__(self, grouped: bool = False) -> None:
        super().__init__()
        self.auroc = BinaryAUROC(validate_args=False)
        self.sums = CTRSums()
        self.gauc = GroupedAUC() if grouped else None

    def update(self, probs: Tensor, target: Tensor, groups: Tensor | None = None) -> None:
        target = target.long()
        self.auroc.update(probs, target)
        self.sums.update(probs, target)
        if self.gauc is not None and groups is not None:
            self.gauc.update(probs, target, groups)

    def compute(self) -> dict[str, float]:
        auroc = self.auroc
        with auroc.sync_context(should_unsync=True):  # every rank's labels under DDP
            kept = auroc.target  # a list of batches, or one tensor once synced across ranks
            empty = isinstance(kept, list) and not kept
            target = torch.zeros(0) if empty else dim_zero_cat(kept)
        positives = int(target.sum())
        # one class only: AUC is undefined (torchmetrics would say 0.0, a number to distrust)
        one_class = positives in (0, target.numel())
        out = {"auc": math.nan if one_class else float(auroc.compute())}
        out.update({k: float(v) for k, v in self.sums.compute().items()})
        if self.gauc is not None and self.gauc.update_count > 0:
            out["gauc"] = float(self.gauc.compute())
        return out

    def reliability(self, bins: int = 10) -> dict[str, list[float]]:
        """:func:`reliability` of every prediction seen since the last reset (all ranks' under
        DDP), read from the AUC metric, which keeps them for the exact AUC anyway."""
        auroc = self.auroc
        with auroc.sync_context(should_unsync=True):
            return reliability(dim_zero_cat(auroc.preds), dim_zero_cat(auroc.target), bins)

    def reset(self) -> None:
        self.auroc.reset()
        self.sums.reset()
        if self.gauc is not None:
            self.gauc.reset()


def target_ranks(scores: Tensor, target_score: Tensor) -> Tensor:
    """0-based rank of each row's target among its candidates, ties counted against it.

    scores: (B, C) candidate scores with the target's own entry already removed or set to
    -inf; target_score: (B,). rank = #candidates scoring >= the target (pessimistic on ties,
    so a constant scorer cannot look good).
    """
    return (scores >= target_score.unsqueeze(1)).sum(dim=1)


def n_rivals(scores: Tensor) -> Tensor:
    """(B, C) candidate scores, excluded entries at -inf -> (B,) number of real candidates."""
    return (scores > float("-inf")).sum(dim=1)


def per_user_metrics(
    ranks: Tensor, n_candidates: Tensor | int, ks: tuple[int, ...] = (5, 10, 20)
) -> dict[str, Tensor]:
    """Each row's HR@K, NDCG@K (one relevant item), reciprocal rank and AUC, float64 (B,).

    ranks (B,) 0-based target ranks; n_candidates: (B,) or one count for every row. The means
    over rows are :class:`RankingMetrics`; per-row values serve paired tests between runs.
    """
    r = ranks.detach().double()
    n = torch.as_tensor(n_candidates, dtype=torch.float64, device=r.device)
    out = {}
    for k in ks:
        hit = r < k
        out[f"hr@{k}"] = hit.double()
        out[f"ndcg@{k}"] = hit / torch.log2(r + 2)
    out["mrr"] = 1.0 / (r + 1)
    out["auc"] = (1.0 - r / n.clamp(min=1)).expand_as(r)
    return out


class RankingMetrics(Metric):
    """HR@K, NDCG@K (one relevant item), MRR and AUC from 0-based target ranks; sums, DDP-exact.

    ``auc`` is the mean share of a row's rivals that score below its target,
    ``1 - rank / n_candidates`` (the per-user AUC with one positive). HR/NDCG at small K measure
    the head of the ranking; AUC measures where the target lands on the whole, which is what
    a small sampled candidate set mostly sees. ``count=True`` adds ``users``, the rows seen.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, ks: tuple[int, ...] = (5, 10, 20), count: bool = False) -> None:
        super().__init__()
        self.ks = tuple(int(k) for k in ks)
        self.count = count
        for k in self.ks:
            self.add_state(f"hr{k}", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"ndcg{k}", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("rr", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("auc", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, ranks: Tensor, n_candidates: Tensor | int) -> None:
        """ranks (B,) 0-based target ranks; n_candidates: (B,) or one count for every row."""
        rows = per_user_metrics(ranks, n_candidates, self.ks)
        for k in self.ks:
            setattr(self, f"hr{k}", getattr(self, f"hr{k}") + rows[f"hr@{k}"].sum())
            setattr(self, f"ndcg{k}", getattr(self, f"ndcg{k}") + rows[f"ndcg@{k}"].sum())
        self.rr += rows["mrr"].sum()
        self.auc += rows["auc"].sum()
        self.n += ranks.numel()

    def compute(self) -> dict[str, Tensor]:
        out = {}
        for k in self.ks:
            out[f"hr@{k}"] = getattr(self, f"hr{k}") / self.n
            out[f"ndcg@{k}"] = getattr(self, f"ndcg{k}") / self.n
        out["mrr"] = self.rr / self.n
        out["auc"] = self.auc / self.n
        if self.count:
            out["users"] = self.n
        return out
