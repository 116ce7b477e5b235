"""A callback that sends its own process a signal at a given training batch (for the fault
tests: SIGKILL, SIGTERM), and one that turns the weights to NaN there."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch


class SignalAt(L.Callback):
    """Sends ``signum`` once, at a training batch or (``during="validation"``) at a batch of
    that epoch's validation, or (``"test"``; epoch: the number of epochs run) of the test: a
    marker file beside the run says it was sent, so that the same command (same config, same
    hash) resumes without being stopped again."""

    def __init__(
        self,
        epoch: int,
        batch: int,
        signum: int,
        marker: str,
        during: str = "train",
        delay: float = 0.0,
        rank: int | None = None,
    ) -> None:
        self.epoch, self.batch, self.signum, self.marker = epoch, batch, signum, Path(marker)
        self.during, self.delay = during, delay  # delay: seconds to wait before the signal
        self.rank = rank  # under DDP: only this rank's process is sent the signal (None: all)

    def _maybe_send(self, trainer: L.Trainer, during: str, i: int) -> None:
        here = (trainer.current_epoch, i, during) == (self.epoch, self.batch, self.during)
        if self.rank is not None and trainer.global_rank != self.rank:
            return
        if here and not trainer.sanity_checking and not self.marker.exists():
            self.marker.touch()
            time.sleep(self.delay)
            os.kill(os.getpid(), self.signum)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        self._maybe_send(trainer, "train", i)

    # (pl_module, outputs, batch, batch_idx[, dataloader_idx]) after the trainer
    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._maybe_send(trainer, "validation", args[3])

    def on_test_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._maybe_send(trainer, "test", args[3])


class NaNAt(L.Callback):
    """From (epoch, batch) on, the first parameter holds NaN: the next loss is NaN."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, i: int
    ) -> None:
        if trainer.current_epoch == self.epoch and i == self.batch:
            with torch.no_grad():
                next(pl_module.model.parameters()).fill_(float("nan"))


class DeferLossCheck(L.Callback):
    """Makes the task check each step's loss at the step's end, as it does on a CUDA device
    (``BaseTask.guard``), so that the CPU tests cover that path."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.defer_loss_check = True


class InfBufferAt(L.Callback):
    """At (epoch, batch), every BatchNorm running variance becomes infinite. The training loss
    stays finite (training normalises with the batch's own statistics), so only the checkpoint
    guard can notice."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, i: int
    ) -> None:
        if trainer.current_epoch == self.epoch and i == self.batch:
            for m in pl_module.modules():
                if isinstance(m, torch.nn.BatchNorm1d):
                    m.running_var.fill_(float("inf"))


class RaiseAt(L.Callback):
    """Raises a RuntimeError (a bug, not a user error) at a training batch."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, i: int
    ) -> None:
        if (trainer.current_epoch, i) == (self.epoch, self.batch):
            raise RuntimeError(f"boom at epoch {self.epoch}")


def early_stopping(**kwargs: Any) -> L.Callback:
    """A callback ``_target_`` that is a function (a factory), as configs may name."""
    from lightning.pytorch.callbacks import EarlyStopping

    return EarlyStopping(**kwargs)
