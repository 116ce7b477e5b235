"""Next-item retrieval: every history position learns to predict the next item (teacher
forcing) with a loss module; the evaluator ranks each user's held-out target."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from hydra.utils import instantiate
from torch import Tensor, nn

from ranklab.data.batch import Batch
from ranklab.data.schema import FIRST_ID, Schema
from ranklab.errors import ConfigError
from ranklab.evaluation import RetrievalEvaluator
from ranklab.losses import RETRIEVAL_LOSSES, RetrievalBatch, RetrievalLoss, SampledSoftmax
from ranklab.samplers import Popularity
from ranklab.tasks.base import BaseTask


def build_loss(loss: str | Mapping[str, Any], num_negatives: int) -> RetrievalLoss:
    """``task.loss``: a name (``bce``, ``sampled_softmax`` with ``task.num_negatives``,
    ``full_ce``) or a module config (``{_target_: ranklab.losses.SampledSoftmax, sampler:
    {_target_: ranklab.samplers.InBatch}}``)."""
    if isinstance(loss, Mapping):
        return instantiate(loss)
    if loss not in RETRIEVAL_LOSSES:
        raise ConfigError(
            "task.loss", f"must be one of {tuple(RETRIEVAL_LOSSES)} or a mapping, got '{loss}'"
        )
    cls = RETRIEVAL_LOSSES[loss]
    return cls(num_negatives=num_negatives) if cls is SampledSoftmax else cls()


class RetrievalTask(BaseTask):
    """Retrieval models (``encode(history) -> (B, L, D)``, ``item_embeddings() -> (V, D)``):
    every history position predicts the next item; the last position of the held-out rows is
    ranked by :class:`ranklab.evaluation.RetrievalEvaluator`.

    The model names its history and target fields (taken from the schema); the user's seen
    items and the sampled negatives are evaluation-only tensors of the batch.

    Extra args: ``schema``; ``loss`` and ``num_negatives`` (:func:`build_loss`); ``ks``,
    ``exclude_seen``, ``sampled_eval``, ``length_buckets`` (the evaluator). Other args:
    :class:`BaseTask`.
    """

    family = ("retrieval",)

    def __init__(
        self,
        model: nn.Module,
        schema: Schema | None = None,
        loss: str | Mapping[str, Any] = "full_ce",
        num_negatives: int = 100,
        ks: Sequence[int] = (5, 10, 20),
        exclude_seen: bool = True,
        sampled_eval: str = "popularity",
        length_buckets: Sequence[int] = (),
        **base: Any,
    ) -> None:
        base.setdefault("monitor", "val/full/ndcg@10")
        super().__init__(model, **base)
        if schema is None:
            raise ConfigError("task", "the retrieval task needs the data's schema")
        if schema.evaluation_field("seen") is None:  # the items each user has had
            raise ConfigError(
                "task",
                "the retrieval task trains on next-item data (each user's items before a "
                "target item, e.g. data=beauty_seq), and this data has labelled rows: rank "
                "them with task=ranking",
            )
        self.loss_fn = build_loss(loss, int(num_negatives))
        for m in self.loss_fn.modules():  # a popularity sampler without counts: the data's
            if isinstance(m, Popularity) and m.weights.numel() == 0:
                m.set_counts(schema.meta.get("item_counts") or [])
        self.evaluator = RetrievalEvaluator(schema, ks, exclude_seen, sampled_eval, length_buckets)
        self.protocol = self.evaluator.protocol()
        if self.trainable:  # a model that trains nothing (PopRec) has no loss to record
            self.protocol["loss"] = loss if isinstance(loss, str) else dict(loss)
        self.item_counts = schema.meta.get("item_counts")

    # -- training ---------------------------------------------------------------------------
    def training_step(self, batch: Batch, batch_idx: int) -> Tensor | None:
        history = batch.features[self.model.history]
        target = batch.features[self.model.target]
        nxt = torch.cat([history[:, 1:], target.unsqueeze(1)], dim=1)  # (B, L): next items
        # positions holding an item predict the next one, unless it is out of vocabulary (the
        # OOV id stands for many rare items: there is no item to predict; the loss over real
        # ids, full_ce's, would index it at -1)
        valid = (history != 0) & (nxt >= FIRST_ID)
        states = self.model.encode(history)[valid]  # (N, D)
        targets = nxt[valid]  # (N,)
        items = self.model.item_embeddings()  # (V, D)
        seen = batch.eval["seen"]
        n_items = items.shape[0]
        # each row's items (seen and next), as sorted keys row * V + item, for negatives
        rows_all = torch.cat([seen.rows(), valid.nonzero()[:, 0]])
        keys = rows_all * n_items + torch.cat([seen.values, targets])
        context = RetrievalBatch(valid.nonzero()[:, 0], torch.sort(keys).values, n_items)
        if targets.numel():
            loss = self.loss_fn(states, targets, items, context)
        else:  # every next item out of vocabulary: nothing to learn from this batch
            loss = items.sum() * 0.0
        self.add_loss(loss, len(batch))
        return self.guard(loss + self.regularization())

    # -- evaluation -------------------------------------------------------------------------
    def _eval_step(self, batch: Batch, stage: str) -> None:
        history = batch.features[self.model.history]
        state = self.model.encode(history)[:, -1]  # (B, D)
        lengths = (history != 0).sum(1)  # (B,)
        self.evaluator.update(
            stage,
            state,
            self.model.item_embeddings(),
            batch.features[self.model.target],
            lengths,
            batch.eval,
        )

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self.record("val", self.evaluator.compute("val"), prog_bar=("full/ndcg@10",))

    def on_test_epoch_start(self) -> None:
        self.evaluator.start("test")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self.record("test", self.evaluator.compute("test"))

    def test_users(self) -> dict[str, Tensor]:
        """The last test's per-user rows (:meth:`RetrievalEvaluator.users`)."""
        return self.evaluator.users()
