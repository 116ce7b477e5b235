"""Retrieval evaluation: ranks each user's target among candidates and records exactly what it
did (the protocol), per-bucket metrics, and each user's ranks for paired tests.

Two protocols at once: ``full`` ranks the target against every real item (the user's earlier
items removed when ``exclude_seen``), ``sampled`` against the data's fixed negatives (drawn
uniformly or by popularity, never the user's items). Ties count against the target.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl
import torch
from torch import Tensor, nn

from ranklab.data.batch import Ragged
from ranklab.data.schema import FIRST_ID, Schema
from ranklab.errors import ConfigError
from ranklab.metrics import RankingMetrics, n_rivals, target_ranks
from ranklab.utils import atomic_write

SAMPLED_EVAL = ("uniform", "popularity")
MODES = ("full", "sampled")


def bucket_labels(edges: list[int], prefix: str = "len") -> list[str]:
    """Names of the buckets that ``edges`` cut: [4, 6] -> len<=4, len5-6, len>6."""
    if not edges:
        return []
    lows = [e + 1 for e in edges[:-1]]
    middle = [f"{prefix}{lo}-{hi}" for lo, hi in zip(lows, edges[1:])]
    return [f"{prefix}<={edges[0]}", *middle, f"{prefix}>{edges[-1]}"]


def bucket_index(values: Tensor, edges: list[int]) -> Tensor:
    """(N,) counts (history lengths, target popularity) -> (N,) bucket index i of
    :func:`bucket_labels`: edges[i-1] < value <= edges[i]."""
    return torch.bucketize(values, torch.tensor(edges, device=values.device))


class RetrievalEvaluator(nn.Module):
    """Ranks targets for one task; metrics per stage (val, test), mode and history bucket.

    ``update(stage, state (B, D), items (V, D), target (B,), history_len (B,), eval)``;
    ``compute(stage)`` -> metric name -> value; ``users()`` the last test's per-user rows.
    The number of sampled negatives is read from the data (``schema.evaluation``).
    """

    def __init__(
        self,
        schema: Schema,
        ks: Sequence[int] = (5, 10, 20),
        exclude_seen: bool = True,
        sampled_eval: str = "popularity",
        length_buckets: Sequence[int] = (),
    ) -> None:
        super().__init__()
        if sampled_eval not in SAMPLED_EVAL:
            raise ConfigError(
                "task.sampled_eval", f"must be one of {SAMPLED_EVAL}, got '{sampled_eval}'"
            )
        edges = [int(e) for e in length_buckets]
        if any(e < 1 for e in edges) or any(a >= b for a, b in itertools.pairwise(edges)):
            raise ConfigError(
                "task.length_buckets", f"must be increasing positive lengths, got {edges}"
            )
        self.negatives_field = f"neg_{sampled_eval}"
        negatives = schema.evaluation_field(self.negatives_field)
        self.exclude_seen, self.sampled_eval = bool(exclude_seen), sampled_eval
        self.n_negatives = negatives.max_len if negatives is not None else None
        ks = tuple(int(k) for k in ks)
        self.metrics = nn.ModuleDict(
            {f"{s}_{m}": RankingMetrics(ks) for s in ("val", "test") for m in MODES}
        )
        self.edges = edges
        self.labels = bucket_labels(edges)
        self.buckets = nn.ModuleDict(
            {
                f"{s}_{m}_{i}": RankingMetrics(ks, count=True)
                for s in ("val", "test")
                for m in MODES
                for i in range(len(self.labels))
            }
        )
        self._rows: list[dict[str, Tensor]] = []

    def protocol(self) -> dict[str, Any]:
        """What the evaluation did, as recorded in metrics.json (ranklab-compare checks it)."""
        out: dict[str, Any] = {
            "split": "leave-one-out (last item test, second last validation)",
            "full_ranking": {"candidates": "all items", "exclude_seen": self.exclude_seen},
            "ties": "counted against the target",
        }
        if self.n_negatives is not None:
            out["sampled"] = {
                "negatives": self.n_negatives,
                "distribution": self.sampled_eval,
                "never_user_items": True,
            }
        if self.edges:
            out["length_buckets"] = self.labels
        return out

    def start(self, stage: str) -> None:
        if stage == "test":
            self._rows = []

    def update(
        self,
        stage: str,
        state: Tensor,
        items: Tensor,
        target: Tensor,
        history_len: Tensor,
        evaluation: dict[str, Any],
    ) -> None:
        scores = state @ items.T  # (B, V)
        target_score = scores.gather(1, target.unsqueeze(1)).squeeze(1)  # (B,)
        scores[:, :FIRST_ID] = float("-inf")  # padding and OOV are never candidates
        if self.exclude_seen:
            seen: Ragged = evaluation["seen"]
            scores[seen.rows(), seen.values] = float("-inf")
        scores.scatter_(1, target.unsqueeze(1), float("-inf"))  # the target is not its own rival
        # an out-of-vocabulary target (min_count > 1, catalog: train) is no item a model can
        # recommend: a miss, ranked below every candidate (the shared OOV row's score would
        # otherwise count as retrieving it)
        oov = target < FIRST_ID
        rivals = n_rivals(scores)
        ranked = {"full": (torch.where(oov, rivals, target_ranks(scores, target_score)), rivals)}
        if self.n_negatives is not None:
            negs = evaluation[self.negatives_field]  # (B, K)
            neg_scores = (state.unsqueeze(1) * items[negs]).sum(-1)  # (B, K)
            n_neg = torch.full_like(target, negs.shape[1])
            ranked["sampled"] = (
                torch.where(oov, n_neg, target_ranks(neg_scores, target_score)),
                n_neg,
            )
        if stage == "test":  # per-user ranks, for paired tests between runs (ranklab-compare)
            self._rows.append(
                {
                    "target": target,
                    "history_len": history_len,
                    **{f"{m}_rank": r for m, (r, _) in ranked.items()},
                    **{f"{m}_candidates": n for m, (_, n) in ranked.items()},
                }
            )
        bucket = bucket_index(history_len, self.edges) if self.edges else None
        for m, (ranks, n_cand) in ranked.items():
            self.metrics[f"{stage}_{m}"].update(ranks, n_cand)
            if bucket is not None:  # bucket i holds edges[i-1] < length <= edges[i]
                for i in range(len(self.labels)):  # empty updates too: no warnings
                    rows = bucket == i
                    self.buckets[f"{stage}_{m}_{i}"].update(ranks[rows], n_cand[rows])

    def compute(self, stage: str) -> dict[str, float]:
        values: dict[str, float] = {}
        modes = MODES if self.n_negatives is not None else ("full",)
        for m in modes:
            metric = self.metrics[f"{stage}_{m}"]
            values.update({f"{m}/{k}": float(v) for k, v in metric.compute().items()})
            metric.reset()
            for i, label in enumerate(self.labels):
                bm = self.buckets[f"{stage}_{m}_{i}"]
                out = {k: float(v) for k, v in bm.compute().items()}  # synced on every rank
                bm.reset()
                users = out.pop("users")
                if users > 0:  # empty buckets are left out, not reported as NaN
                    values[f"{label}/users"] = users
                    values.update({f"{m}/{label}/{k}": v for k, v in out.items()})
        return values

    def users(self) -> dict[str, Tensor]:
        """The last test's rows in data order (this process's shard under DDP): target (N,),
        history_len (N,) and, per mode m in full/sampled, the 0-based ``m_rank`` (N,) and the
        number of rivals ``m_candidates`` (N,)."""
        if not self._rows:
            return {}
        return {k: torch.cat([r[k] for r in self._rows]).cpu() for k in self._rows[0]}

    def write_users(self, path: Path, item_counts: Sequence[int] | None = None) -> Path | None:
        """The per-user file that ``ranklab-evaluate`` writes and ``ranklab-compare`` pairs,
        with each target's training count (``target_train_count``) when the data has it."""
        users = self.users()
        if not users:
            return None
        table = pl.DataFrame({k: v.numpy() for k, v in users.items()})
        if item_counts is not None:
            table = table.with_columns(
                pl.Series("target_train_count", item_counts, dtype=pl.Int64).gather(table["target"])
            )
        atomic_write(path, lambda tmp: table.write_parquet(tmp))
        return path
