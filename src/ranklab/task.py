"""The LightningModule for ranking: loss, optimiser, regularisation, metrics, logging.

Models stay free of training concerns: they map features to logits (or a dict with
``logits`` and auxiliary losses); everything else happens here.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ranklab.data.batch import Batch
from ranklab.metrics import CTRMetrics
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


class RankingTask(L.LightningModule):
    """Trains a CTR / sequence ranking model with binary cross-entropy.

    Args:
        model: maps ``features`` to logits (B,) or to ``{"logits": (B,), "<name>_loss": scalar}``.
        lr, optimizer, weight_decay: the optimiser (Adam by default).
        embedding_regularizer: lambda of ``(lambda/2) * ||W||^2`` over every whole embedding
            table, added to each batch's loss (BARS/FuxiCTR ``embedding_regularizer``).
        net_regularizer: the same over the other weights (``net_regularizer``).
        lr_decay_factor, lr_patience, min_lr: ReduceLROnPlateau on the monitored metric; the
            BARS protocol multiplies the lr by 0.1 on each non-improving epoch (patience 0).
            ``lr_decay_factor=1`` disables it.
        monitor, mode: the validation metric that drives lr decay, early stopping and the best
            checkpoint.
        aux_loss_weight: weight of auxiliary losses a model returns (e.g. DIEN's).
        hparams: plain-Python description of the run (model config, schema, data name) stored
            in checkpoints; never an nn.Module or an OmegaConf object.
    """

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
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(
                f"task.optimizer must be one of {sorted(OPTIMIZERS)}, got '{optimizer}'"
            )
        self.save_hyperparameters(ignore=["model"])
        self.model = model
        self.emb_params, self.net_params = split_parameters(model)
        self.val_metrics = CTRMetrics(grouped=grouped_metrics)
        self.test_metrics = CTRMetrics(grouped=grouped_metrics)
        self.results: dict[str, dict[str, float]] = {}
        self.history: list[dict[str, float]] = []  # validation metrics of each training epoch

    # -- forward / loss -------------------------------------------------------------------
    def forward(self, features: dict[str, Tensor]) -> Tensor | dict[str, Tensor]:
        return self.model(features)

    def _logits_and_aux(self, out: Tensor | dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        if isinstance(out, dict):
            aux = [v for k, v in out.items() if k.endswith("_loss")]
            return out["logits"], (sum(aux) if aux else None)
        return out, None

    def regularization(self) -> Tensor | float:
        hp = self.hparams
        reg: Tensor | float = 0.0
        if hp.embedding_regularizer:
            reg = reg + hp.embedding_regularizer / 2 * sum(p.pow(2).sum() for p in self.emb_params)
        if hp.net_regularizer:
            reg = reg + hp.net_regularizer / 2 * sum(p.pow(2).sum() for p in self.net_params)
        return reg

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        logits, aux = self._logits_and_aux(self.model(batch.features))
        loss = F.binary_cross_entropy_with_logits(logits, batch.label)
        total = loss + self.regularization()
        if aux is not None:
            total = total + self.hparams.aux_loss_weight * aux
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        return total

    # -- evaluation -------------------------------------------------------------------------
    def _eval_step(self, batch: Batch, metrics: CTRMetrics) -> None:
        logits, _ = self._logits_and_aux(self.model(batch.features))
        metrics.update(torch.sigmoid(logits.float()), batch.label, batch.group)

    def _eval_end(self, stage: str, metrics: CTRMetrics) -> None:
        values = metrics.compute()
        metrics.reset()
        self.results[stage] = values
        trainer = self.trainer
        if stage == "val" and trainer.state.fn == "fit" and not trainer.sanity_checking:
            lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None
            self.history.append({"epoch": int(self.current_epoch), "lr": lr, **values})
        for k, v in values.items():
            self.log(f"{stage}/{k}", v, prog_bar=(k == "auc"), sync_dist=False)

    def best_epoch(self) -> int | None:
        """The epoch whose monitored validation metric is best (the first, on ties)."""
        key = self.hparams.monitor.split("/", 1)[-1]
        scored = [h for h in self.history if key in h]
        if not scored:
            return None
        pick = max if self.hparams.mode == "max" else min
        return int(pick(scored, key=lambda h: h[key])["epoch"])

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val", self.val_metrics)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics)

    def on_test_epoch_end(self) -> None:
        self._eval_end("test", self.test_metrics)

    def predict_step(self, batch: Batch, batch_idx: int) -> Tensor:
        logits, _ = self._logits_and_aux(self.model(batch.features))
        return torch.sigmoid(logits)

    # -- plumbing ---------------------------------------------------------------------------
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
        return {
            "optimizer": opt,
            "lr_scheduler": {
                "scheduler": sched,
                "monitor": hp.monitor,
                "interval": "epoch",
                "frequency": 1,
            },
        }
