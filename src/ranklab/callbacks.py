"""Lightning callbacks: training throughput (train time only) and a progress bar showing it."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar


class Throughput(L.Callback):
    """Training samples per second, counting only time spent in training batches' epochs.

    Validation inside an epoch is subtracted, so the figure is comparable with a bare training
    loop. ``samples_per_s`` holds the whole-fit figure; ``last`` the current running figure.
    """

    def __init__(self) -> None:
        self.samples = 0
        self.seconds = 0.0
        self.last = 0.0
        self._t0: float | None = None
        self._epoch_samples = 0
        self._val_t0: float | None = None

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else float("nan")

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()
        self._epoch_samples = 0

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self._epoch_samples += len(batch)
        if self._t0 is not None:
            elapsed = time.perf_counter() - self._t0
            self.last = self._epoch_samples / elapsed if elapsed > 0 else 0.0

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_t0 = time.perf_counter()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._val_t0 is not None and self._t0 is not None:
            self._t0 += time.perf_counter() - self._val_t0  # do not count validation
        self._val_t0 = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._t0 is not None:
            self.seconds += time.perf_counter() - self._t0
            self.samples += self._epoch_samples
            self._t0 = None


class ProgressBar(TQDMProgressBar):
    """TQDM bar that also shows training samples per second (from the Throughput callback)."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        for cb in trainer.callbacks:
            if isinstance(cb, Throughput) and cb.last:
                items["samples/s"] = f"{cb.last:,.0f}"
        return items
