"""LightningModules: the training concerns (loss, optimiser, regularisation, metrics, logging).

Models stay free of them: a ranking model maps features to logits (or a dict with ``logits``
and auxiliary losses); a retrieval model encodes a history into states and exposes its item
embeddings. ``BaseTask`` holds what both tasks share.
"""

from __future__ import annotations

import itertools
from typing import Any, ClassVar

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ranklab.data.batch import Batch
from ranklab.errors import ConfigError
from ranklab.metrics import CTRMetrics, RankingMetrics, n_rivals, target_ranks
from ranklab.nn.embedding import FeatureEmbedding

OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad,
}


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(embedding parameters, other parameters): the former are those of FeatureEmbedding
    modules (every field table, including the first-order weights), as FuxiCTR counts them."""
    emb_ids: set[int] = set()
    emb: list[nn.Parameter] = []
    for m in model.modules():
        if isinstance(m, FeatureEmbedding):
            for p in m.parameters():
                if id(p) not in emb_ids:
                    emb_ids.add(id(p))
                    emb.append(p)
    other = [p for p in model.parameters() if id(p) not in emb_ids]
    return emb, other


class BaseTask(L.LightningModule):
    """Optimiser, plateau lr decay, L2 regularisers, epoch history and device transfer.

    Args:
        model: the nn.Module being trained.
        lr, optimizer, weight_decay: the optimiser (Adam by default).
        embedding_regularizer: lambda of ``(lambda/2) * ||W||^2`` over every whole embedding
            table, added to each batch's loss (BARS/FuxiCTR ``embedding_regularizer``).
        net_regularizer: the same over the other weights (``net_regularizer``).
        lr_decay_factor, lr_patience, min_lr: ReduceLROnPlateau on the monitored metric; the
            BARS protocol multiplies the lr by 0.1 on each non-improving epoch (patience 0).
            ``lr_decay_factor=1`` disables it.
        monitor, mode: the validation metric that drives lr decay, early stopping and the best
            checkpoint.
        hparams: plain-Python description of the run (model config, schema, data name) stored
            in checkpoints; never an nn.Module or an OmegaConf object.
    """

    family: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        model: nn.Module,
        lr: float = 1e-3,
        optimizer: str = "adam",
        weight_decay: float = 0.0,
        embedding_regularizer: float = 0.0,
        net_regularizer: float = 0.0,
        lr_decay_factor: float = 0.1,
        lr_patience: int = 0,
        min_lr: float = 1e-6,
        monitor: str = "val/auc",
        mode: str = "max",
        hparams: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ConfigError(
                "task.optimizer", f"must be one of {sorted(OPTIMIZERS)}, got '{optimizer}'"
            )
        if mode not in ("max", "min"):
            raise ConfigError("task.mode", f"must be 'max' or 'min', got '{mode}'")
        model_family = getattr(model, "family", "ctr")
        wanted = "retrieval" if model_family == "retrieval" else "ranking"
        if self.family and model_family not in self.family:
            raise ConfigError(
                "task",
                f"{type(model).__name__} is a {model_family} model and {type(self).__name__} "
                f"trains {'/'.join(self.family)} models; choose task={wanted}",
            )
        self.model = model
        self.emb_params, self.net_params = split_parameters(model)
        self.results: dict[str, dict[str, float]] = {}
        self.history: list[dict[str, float]] = []  # validation metrics of each training epoch
        # the training loss summed over the epoch's samples, on the device: no sync per batch
        self._loss_sum: Tensor | float = 0.0
        self._loss_rows = 0

    def on_train_epoch_start(self) -> None:
        self._loss_sum, self._loss_rows = 0.0, 0

    def add_loss(self, loss: Tensor, rows: int) -> None:
        """Log a batch's training loss (``train/loss``, per step) and add it to the epoch mean."""
        self.log("train/loss", loss, prog_bar=True, batch_size=rows)
        self._loss_sum = self._loss_sum + loss.detach() * rows
        self._loss_rows += rows

    def epoch_loss(self) -> float | None:
        """The mean training loss of the current epoch so far (None before any batch)."""
        return float(self._loss_sum) / self._loss_rows if self._loss_rows else None

    @property
    def trainable(self) -> bool:
        return any(p.requires_grad for p in self.model.parameters())

    def regularization(self) -> Tensor | float:
        hp = self.hparams
        reg: Tensor | float = 0.0
        if hp.embedding_regularizer:
            reg = reg + hp.embedding_regularizer / 2 * sum(p.pow(2).sum() for p in self.emb_params)
        if hp.net_regularizer:
            reg = reg + hp.net_regularizer / 2 * sum(p.pow(2).sum() for p in self.net_params)
        return reg

    def record(self, stage: str, values: dict[str, float], prog_bar: tuple[str, ...] = ()) -> None:
        """Keep and log a stage's metrics; during fitting also append them to the history."""
        self.results[stage] = values
        for k, v in values.items():
            self.log(f"{stage}/{k}", v, prog_bar=k in prog_bar, sync_dist=False)
        trainer = self.trainer
        if stage == "val" and trainer.state.fn == "fit" and not trainer.sanity_checking:
            lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None
            loss = self.epoch_loss()  # every batch of the epoch has run before its validation
            if loss is not None:  # logged once per epoch whatever log_every_n_steps is
                self.log("train/loss_epoch", loss, sync_dist=False)
            entry = {"epoch": int(self.current_epoch), "lr": lr, "train_loss": loss}
            self.history.append({**entry, **values})

    def best_epoch(self) -> int | None:
        """The epoch whose monitored validation metric is best (the first, on ties)."""
        key = self.hparams.monitor.split("/", 1)[-1]
        scored = [h for h in self.history if key in h]
        if not scored:
            return None
        pick = max if self.hparams.mode == "max" else min
        return int(pick(scored, key=lambda h: h[key])["epoch"])

    def transfer_batch_to_device(
        self, batch: Batch, device: torch.device, dataloader_idx: int
    ) -> Batch:
        if batch.label.device == device:  # device-resident data: nothing to move
            return batch
        return batch.to(device, non_blocking=True)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        opt = OPTIMIZERS[hp.optimizer](
            self.model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay
        )
        if hp.lr_decay_factor >= 1:
            return {"optimizer": opt}
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt,
            mode=hp.mode,
            factor=hp.lr_decay_factor,
            patience=hp.lr_patience,
            threshold=1e-6,
            threshold_mode="abs",
            min_lr=hp.min_lr,
        )
        # The monitored metric exists only after a validation epoch: step the scheduler at
        # the validation interval, or Lightning fails on the epochs without validation.
        every = self.trainer.check_val_every_n_epoch or 1  # None: validation by steps
        return {
            "optimizer": opt,
            "lr_scheduler": {
                "scheduler": sched,
                "monitor": hp.monitor,
                "interval": "epoch",
                "frequency": every,
            },
        }


class RankingTask(BaseTask):
    """Binary cross-entropy ranking (CTR) with AUC, log loss, NE, calibration, grouped AUC.

    Extra args: ``aux_loss_weight`` weighs auxiliary losses a model returns (e.g. DIEN's);
    ``grouped_metrics`` computes grouped AUC over the schema's group (e.g. users).
    """

    family = ("ctr", "sequence")

    def __init__(
        self,
        model: nn.Module,
        lr: float = 1e-3,
        optimizer: str = "adam",
        weight_decay: float = 0.0,
        embedding_regularizer: float = 0.0,
        net_regularizer: float = 0.0,
        lr_decay_factor: float = 0.1,
        lr_patience: int = 0,
        min_lr: float = 1e-6,
        monitor: str = "val/auc",
        mode: str = "max",
        aux_loss_weight: float = 1.0,
        grouped_metrics: bool = True,
        hparams: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            model,
            lr,
            optimizer,
            weight_decay,
            embedding_regularizer,
            net_regularizer,
            lr_decay_factor,
            lr_patience,
            min_lr,
            monitor,
            mode,
            hparams,
        )
        # logger=False: trackers get the resolved config once, from train(); these go to checkpoints
        self.save_hyperparameters(ignore=["model"], logger=False)
        self.val_metrics = CTRMetrics(grouped=grouped_metrics)
        self.test_metrics = CTRMetrics(grouped=grouped_metrics)

    def forward(self, features: dict[str, Tensor]) -> Tensor | dict[str, Tensor]:
        return self.model(features)

    @staticmethod
    def _logits_and_aux(out: Tensor | dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        if isinstance(out, dict):
            aux = [v for k, v in out.items() if k.endswith("_loss")]
            return out["logits"], (sum(aux) if aux else None)
        return out, None

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        logits, aux = self._logits_and_aux(self.model(batch.features))
        loss = F.binary_cross_entropy_with_logits(logits, batch.label)
        total = loss + self.regularization()
        if aux is not None:
            total = total + self.hparams.aux_loss_weight * aux
        self.add_loss(loss, len(batch))
        return total

    def _eval_step(self, batch: Batch, metrics: CTRMetrics) -> None:
        logits, _ = self._logits_and_aux(self.model(batch.features))
        metrics.update(torch.sigmoid(logits.float()), batch.label, batch.group)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        self.record("val", self.val_metrics.compute(), prog_bar=("auc",))
        self.val_metrics.reset()

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics)

    def on_test_epoch_end(self) -> None:
        self.record("test", self.test_metrics.compute())
        self.reliability = {"test": self.test_metrics.reliability()}  # for calibration plots
        self.test_metrics.reset()

    def predict_step(self, batch: Batch, batch_idx: int) -> Tensor:
        logits, _ = self._logits_and_aux(self.model(batch.features))
        return torch.sigmoid(logits)


LOSSES = ("bce", "sampled_softmax", "full_ce")
SAMPLED_EVAL = ("uniform", "popularity")


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


class RetrievalTask(BaseTask):
    """Next-item retrieval: every history position predicts the next item (teacher forcing).

    Losses (``loss``): ``bce`` (the SASRec paper: the next item against one sampled negative
    that is not one of the user's items), ``sampled_softmax`` (softmax over the next item and
    ``num_negatives`` uniformly sampled items shared by the batch; accidental hits masked),
    ``full_ce`` (softmax over the whole catalogue).

    Evaluation (leave-one-out) ranks the target against (a) every item (``full/...``), with
    the user's earlier items excluded when ``exclude_seen``, and (b) the data's 100 fixed
    negatives drawn ``sampled_eval`` = uniform or by popularity (``sampled/...``). Ties count
    against the target. Metrics: HR@K and NDCG@K for K in ``ks``, MRR and AUC.
    ``length_buckets`` (increasing edges, e.g. ``[4, 6, 10, 20]``) adds the same metrics per
    bucket of history length (items the model sees), ``full/len5-6/ndcg@10`` etc., with the
    bucket's user count as ``len5-6/users``.
    """

    family = ("retrieval",)

    def __init__(
        self,
        model: nn.Module,
        lr: float = 1e-3,
        optimizer: str = "adam",
        weight_decay: float = 0.0,
        embedding_regularizer: float = 0.0,
        net_regularizer: float = 0.0,
        lr_decay_factor: float = 1.0,
        lr_patience: int = 0,
        min_lr: float = 1e-6,
        monitor: str = "val/full/ndcg@10",
        mode: str = "max",
        loss: str = "full_ce",
        num_negatives: int = 100,
        ks: tuple[int, ...] = (5, 10, 20),
        exclude_seen: bool = True,
        sampled_eval: str = "popularity",
        length_buckets: tuple[int, ...] = (),
        hparams: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            model,
            lr,
            optimizer,
            weight_decay,
            embedding_regularizer,
            net_regularizer,
            lr_decay_factor,
            lr_patience,
            min_lr,
            monitor,
            mode,
            hparams,
        )
        if loss not in LOSSES:
            raise ConfigError("task.loss", f"must be one of {LOSSES}, got '{loss}'")
        if sampled_eval not in SAMPLED_EVAL:
            raise ConfigError(
                "task.sampled_eval", f"must be one of {SAMPLED_EVAL}, got '{sampled_eval}'"
            )
        edges = [int(e) for e in length_buckets]
        if any(e < 1 for e in edges) or any(a >= b for a, b in itertools.pairwise(edges)):
            raise ConfigError(
                "task.length_buckets", f"must be increasing positive lengths, got {edges}"
            )
        # logger=False: trackers get the resolved config once, from train(); these go to checkpoints
        self.save_hyperparameters(ignore=["model"], logger=False)
        ks = tuple(int(k) for k in ks)
        self.metrics = nn.ModuleDict(
            {f"{s}_{m}": RankingMetrics(ks) for s in ("val", "test") for m in ("full", "sampled")}
        )
        self.length_edges = edges
        self.length_labels = bucket_labels(edges)
        self.bucket_metrics = nn.ModuleDict(
            {
                f"{s}_{m}_{i}": RankingMetrics(ks, count=True)
                for s in ("val", "test")
                for m in ("full", "sampled")
                for i in range(len(self.length_labels))
            }
        )
        self.protocol = {
            "split": "leave-one-out (last item test, second last validation)",
            "loss": loss,
            "full_ranking": {"candidates": "all items", "exclude_seen": bool(exclude_seen)},
            "sampled": {"negatives": 100, "distribution": sampled_eval, "never_user_items": True},
            "ties": "counted against the target",
        }
        if edges:
            self.protocol["length_buckets"] = self.length_labels

    # -- training ---------------------------------------------------------------------------
    def _negatives_not_in(self, rows: Tensor, items: Tensor, n_items: int) -> Tensor:
        """One uniform negative per entry of ``rows`` (N,), avoiding ``items[rows]`` (B, S)."""
        neg = torch.randint(2, n_items, rows.shape, device=rows.device)
        for _ in range(10):  # resample collisions (few: a user's items are a tiny share)
            clash = (items[rows] == neg.unsqueeze(1)).any(1)
            if not clash.any():
                break
            neg[clash] = torch.randint(2, n_items, (int(clash.sum()),), device=rows.device)
        return neg

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor | None:
        f = batch.features
        history, target = f["history"], f["target"]
        nxt = torch.cat(
            [history[:, 1:], target.unsqueeze(1)], dim=1
        )  # (B, L): next item of each prefix
        valid = history != 0  # positions holding an item predict the next one
        states = self.model.encode(history)[valid]  # (N, D)
        pos = nxt[valid]  # (N,)
        items = self.model.item_embeddings()  # (V, D)
        n_items = items.shape[0]
        loss_name = self.hparams.loss
        if loss_name == "bce":
            user_items = torch.cat([f["seen"], nxt], dim=1)  # (B, S + L)
            rows = valid.nonzero()[:, 0]
            neg = self._negatives_not_in(rows, user_items, n_items)
            pos_logit = (states * items[pos]).sum(-1)
            neg_logit = (states * items[neg]).sum(-1)
            loss = F.binary_cross_entropy_with_logits(
                pos_logit, torch.ones_like(pos_logit)
            ) + F.binary_cross_entropy_with_logits(neg_logit, torch.zeros_like(neg_logit))
        elif loss_name == "sampled_softmax":
            negs = torch.randint(
                2, n_items, (self.hparams.num_negatives,), device=states.device
            )  # (K,)
            neg_logits = states @ items[negs].T  # (N, K)
            neg_logits = neg_logits.masked_fill(
                negs.unsqueeze(0) == pos.unsqueeze(1), float("-inf")
            )
            logits = torch.cat([(states * items[pos]).sum(-1, keepdim=True), neg_logits], dim=1)
            loss = F.cross_entropy(logits, torch.zeros_like(pos))
        else:  # full softmax over real items (ids >= 2)
            loss = F.cross_entropy(states @ items[2:].T, pos - 2)  # (N, V-2)
        self.add_loss(loss, len(batch))
        return loss + self.regularization()

    # -- evaluation -------------------------------------------------------------------------
    def _eval_step(self, batch: Batch, stage: str) -> None:
        f = batch.features
        state = self.model.encode(f["history"])[:, -1]  # (B, D)
        items = self.model.item_embeddings()  # (V, D)
        target = f["target"]
        scores = state @ items.T  # (B, V)
        target_score = scores.gather(1, target.unsqueeze(1)).squeeze(1)  # (B,)
        scores[:, :2] = float("-inf")  # padding and OOV are never candidates
        if self.hparams.exclude_seen:
            scores.scatter_(1, f["seen"], float("-inf"))
        scores.scatter_(1, target.unsqueeze(1), float("-inf"))  # the target is not its own rival
        negs = f["neg_uniform"] if self.hparams.sampled_eval == "uniform" else f["neg_popularity"]
        neg_scores = (state.unsqueeze(1) * items[negs]).sum(-1)  # (B, 100)
        ranked = {
            "full": (target_ranks(scores, target_score), n_rivals(scores)),
            "sampled": (
                target_ranks(neg_scores, target_score),
                torch.full_like(target, negs.shape[1]),
            ),
        }
        lengths = (f["history"] != 0).sum(1)  # (B,)
        if stage == "test":  # per-user ranks, for paired tests between runs (ranklab-compare)
            self._test_rows.append(
                {
                    "target": target,
                    "history_len": lengths,
                    **{f"{m}_rank": r for m, (r, _) in ranked.items()},
                    **{f"{m}_candidates": n for m, (_, n) in ranked.items()},
                }
            )
        bucket = None
        if self.length_edges:
            bucket = bucket_index(lengths, self.length_edges)
        for m, (ranks, n_cand) in ranked.items():
            self.metrics[f"{stage}_{m}"].update(ranks, n_cand)
            if bucket is not None:  # bucket i holds edges[i-1] < length <= edges[i]
                for i in range(len(self.length_labels)):  # empty updates too: no warnings
                    rows = bucket == i
                    self.bucket_metrics[f"{stage}_{m}_{i}"].update(ranks[rows], n_cand[rows])

    def _eval_end(self, stage: str) -> None:
        values = {}
        for m in ("full", "sampled"):
            metric = self.metrics[f"{stage}_{m}"]
            values.update({f"{m}/{k}": float(v) for k, v in metric.compute().items()})
            metric.reset()
            for i, label in enumerate(self.length_labels):
                bm = self.bucket_metrics[f"{stage}_{m}_{i}"]
                out = {k: float(v) for k, v in bm.compute().items()}  # synced on every rank
                bm.reset()
                users = out.pop("users")
                if users > 0:  # empty buckets are left out, not reported as NaN
                    values[f"{label}/users"] = users
                    values.update({f"{m}/{label}/{k}": v for k, v in out.items()})
        self.record(stage, values, prog_bar=("full/ndcg@10",))

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def on_test_epoch_start(self) -> None:
        self._test_rows: list[dict[str, Tensor]] = []

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")

    def test_users(self) -> dict[str, Tensor]:
        """The last test's rows in data order (this process's shard under DDP): target (N,),
        history_len (N,) and, per mode m in full/sampled, the 0-based ``m_rank`` (N,) and the
        number of rivals ``m_candidates`` (N,)."""
        rows = getattr(self, "_test_rows", [])
        if not rows:
            return {}
        return {k: torch.cat([r[k] for r in rows]).cpu() for k in rows[0]}
