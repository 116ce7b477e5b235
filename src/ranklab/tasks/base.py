"""What every task shares: optimiser and lr schedule from config, L2 regularisers, the epoch
history, the training loss's epoch mean, and device transfer."""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable
from typing import Any, ClassVar

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn

from ranklab.data.batch import Batch
from ranklab.errors import ConfigError, Diverged
from ranklab.nn.embedding import FeatureEmbedding

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]
ADAM = functools.partial(torch.optim.Adam, lr=1e-3)


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
    """Optimiser and lr schedule (config groups), L2 regularisers, epoch history.

    Args:
        model: the nn.Module being trained.
        optimizer: ``params -> torch.optim.Optimizer``, e.g. ``conf/optimizer/adam.yaml`` (a
            ``_partial_`` target: any torch optimiser is a YAML file). Default Adam, lr 1e-3.
        scheduler: ``optimizer -> lr scheduler`` (``conf/scheduler/``) or None. A
            ``ReduceLROnPlateau`` is stepped on the monitored metric after each validation
            (BARS: x0.1 on each non-improving epoch); others every ``scheduler_interval``
            (``epoch`` or ``step``).
        embedding_regularizer: lambda of ``(lambda/2) * ||W||^2`` over every whole embedding
            table, added to each batch's loss (BARS/FuxiCTR ``embedding_regularizer``).
        net_regularizer: the same over the other weights (``net_regularizer``).
        monitor, mode: the validation metric that drives lr decay, early stopping and the best
            checkpoint.
        hparams: plain-Python description of the run (model, optimiser and scheduler configs,
            schema, data name) stored in checkpoints; never an nn.Module or an OmegaConf object.
    """

    family: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        embedding_regularizer: float = 0.0,
        net_regularizer: float = 0.0,
        monitor: str = "val/auc",
        mode: str = "max",
        scheduler_interval: str = "epoch",
        hparams: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if mode not in ("max", "min"):
            raise ConfigError("task.mode", f"must be 'max' or 'min', got '{mode}'")
        if scheduler_interval not in ("epoch", "step"):
            raise ConfigError(
                "task.scheduler_interval", f"must be 'epoch' or 'step', got '{scheduler_interval}'"
            )
        model_family = getattr(model, "family", "ctr")
        wanted = "retrieval" if model_family == "retrieval" else "ranking"
        if self.family and model_family not in self.family:
            raise ConfigError(
                "task",
                f"{type(model).__name__} is a {model_family} model and {type(self).__name__} "
                f"trains {'/'.join(self.family)} models; choose task={wanted}",
            )
        # plain arguments go to checkpoints (weights_only loads); objects stay out
        self.save_hyperparameters(
            ignore=["model", "optimizer", "scheduler", "schema"], logger=False
        )
        self.model = model
        self.optimizer_factory = optimizer or ADAM
        self.scheduler_factory = scheduler
        self.emb_params, self.net_params = split_parameters(model)
        self.results: dict[str, dict[str, float]] = {}
        self.history: list[dict[str, float]] = []  # validation metrics of each training epoch
        # the training loss summed over the epoch's samples, on the device: no sync per batch
        self._loss_sum: Tensor | float = 0.0
        self._loss_rows = 0
        self.epoch_lr: float | None = None
        self._schedule_state: dict[str, Any] | None = None
        # the loss check of the step in flight: None (checked at once, the CPU default), or
        # (event, epoch, step) with the loss on its way to _loss_host (see guard)
        self.defer_loss_check: bool | None = None  # None: on a CUDA device
        self._loss_host: Tensor | None = None
        self._pending_loss: tuple[Any, int, int] | None = None

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

    # -- the epoch's training loss ------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        # (not called when Lightning resumes mid-epoch: the epoch's loss so far and its lr then
        # come with the checkpoint)
        self._loss_sum, self._loss_rows = 0.0, 0
        # the lr this epoch trains with (an epoch-interval schedule steps before validation)
        opts = self.trainer.optimizers
        self.epoch_lr = opts[0].param_groups[0]["lr"] if opts else None

    def add_loss(self, loss: Tensor, rows: int) -> None:
        """Add a batch's training loss to the epoch mean and, on the steps Lightning's loggers
        write (``log_every_n_steps``), log it as ``train/loss``."""
        if self.logs_this_step():
            self.log("train/loss", loss, batch_size=rows)
        self._loss_sum = self._loss_sum + loss.detach() * rows
        self._loss_rows += rows

    def logs_this_step(self) -> bool:
        """Whether Lightning's loggers write the metrics of this training step.

        A per-step value is logged only then: Lightning's ``self.log`` costs about 1 ms a call
        on these CPUs (2.4 ms under cProfile; it moves its record of the key to the value's
        device on every call, deep-copying the record's metadata), a sizeable part of an LR
        step on Frappe_x1, and the loggers would drop the other steps' values anyway. The
        progress bar shows the epoch's running mean instead
        (:class:`ranklab.callbacks.ProgressBar`)."""
        trainer = self._trainer
        if trainer is None:  # self.log would only warn
            return False
        connector = getattr(trainer, "_logger_connector", None)  # Lightning's own rule
        return bool(getattr(connector, "should_update_logs", True) or trainer.fast_dev_run)

    def guard(self, total: Tensor) -> Tensor:
        """The loss a step returns, checked: a NaN or infinite loss stops the run, naming the
        epoch and the step, before anything is saved from the step's weights.

        On the CPU the check is made here, before the backward pass. On a CUDA device reading
        the loss would make the CPU wait for the forward pass every step, and stop it queueing
        the backward pass's kernels meanwhile (the only per-step sync of a training step); the
        loss is copied to pinned memory without waiting instead, and :meth:`check_loss` reads
        it at the step's end (``on_train_batch_end``), before any validation or checkpoint.
        The step's optimiser update has then been made, from a NaN: those weights are never
        saved (:class:`~ranklab.callbacks.Resumable` checks the loss first)."""
        defer = self.defer_loss_check
        if not (total.is_cuda if defer is None else defer):
            if not bool(torch.isfinite(total)):
                epoch, step = int(self.current_epoch), int(self.global_step)
                raise self._diverged(float(total.detach()), epoch, step)
            return total
        self.check_loss()  # a step left unchecked (a hook that never ran): before it is lost
        epoch, step = int(self.current_epoch), int(self.global_step)  # for check_loss to name
        if self._loss_host is None:
            self._loss_host = torch.empty((), dtype=torch.float32, pin_memory=total.is_cuda)
        self._loss_host.copy_(total.detach().float(), non_blocking=True)
        event = None
        if total.is_cuda:
            event = torch.cuda.Event()
            event.record()
        self._pending_loss = (event, epoch, step)
        return total

    def check_loss(self) -> None:
        """Raise :class:`Diverged` if the loss of the step in flight (deferred by
        :meth:`guard`) was not finite; waits for that step's forward pass only."""
        pending, self._pending_loss = self._pending_loss, None
        if pending is None:
            return
        event, epoch, step = pending
        if event is not None:
            event.synchronize()
        value = float(self._loss_host)
        if not math.isfinite(value):
            raise self._diverged(value, epoch, step)

    @staticmethod
    def _diverged(value: float, epoch: int, step: int) -> Diverged:
        return Diverged(
            f"training loss is {value} at epoch {epoch}, step {step}: the run diverged (lower "
            f"optimizer.lr, clip gradients with trainer.gradient_clip_val)",
            epoch,
            step,
        )

    def on_validation_start(self) -> None:
        """Before each validation of fit: weights or buffers holding a NaN or an infinity (an
        overflowed running variance, a weight pushed to inf while the loss stayed finite) stop
        the run as diverged, before a checkpoint could keep them or a result be reported."""
        from ranklab.callbacks import non_finite

        trainer = self._trainer
        if trainer is None or trainer.state.fn != "fit" or trainer.sanity_checking:
            return
        self.check_loss()
        bad = non_finite(self)
        if bad is not None:
            epoch, step = int(self.current_epoch), int(self.global_step)
            raise Diverged(
                f"{bad} is not finite at epoch {epoch}, step {step}: the run diverged (lower "
                f"optimizer.lr, clip gradients with trainer.gradient_clip_val)",
                epoch,
                step,
            )

    def epoch_loss(self) -> float | None:
        """The mean training loss of the current epoch so far (None before any batch)."""
        return float(self._loss_sum) / self._loss_rows if self._loss_rows else None

    def _loss_totals(self) -> tuple[float, int]:
        """The epoch's loss sum and rows so far, over every rank under DDP (a collective:
        each rank must call it at the same point), else this process's."""
        loss_sum, rows = float(self._loss_sum), self._loss_rows
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            t = torch.tensor([loss_sum, float(rows)], dtype=torch.float64, device=self.device)
            t = trainer.strategy.reduce(t, reduce_op="sum")
            loss_sum, rows = float(t[0]), int(t[1])
        return loss_sum, rows

    # -- resuming -----------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """What Lightning's checkpoint lacks for an exact resume: the epoch history, the
        epoch's loss so far, and the RNG states (dropout, sampled negatives). Plain types only:
        checkpoints load with ``weights_only=True``."""
        np_state = np.random.get_state()
        # every rank's share (each rank makes the checkpoint, rank 0 writes it): a resumed
        # epoch's loss counted rank 0's rows twice and the others' not at all
        loss_sum, rows = self._loss_totals()
        checkpoint["ranklab"] = {
            "history": self.history,
            "loss_sum": loss_sum,  # over every rank (on resuming, rank 0 holds it)
            "loss_rows": rows,
            "epoch_lr": self.epoch_lr,
            "schedule": sched.state_dict() if (sched := getattr(self, "schedule", None)) else None,
            "rng_torch": torch.get_rng_state(),
            "rng_numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "rng_python": random.getstate(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from lightning.pytorch.trainer.states import TrainerFn

        state = checkpoint.get("ranklab")
        # only a resumed fit takes the training state (validate/test load best.ckpt's weights)
        if not state or self._trainer is None or self.trainer.state.fn != TrainerFn.FITTING:
            return
        self.history = list(state["history"])
        self._loss_sum, self._loss_rows = state["loss_sum"], state["loss_rows"]
        if self.trainer.global_rank > 0:  # the epoch's loss so far is every rank's: rank 0's
            self._loss_sum, self._loss_rows = 0.0, 0
        self.epoch_lr = state["epoch_lr"]
        self._schedule_state = state.get("schedule")  # applied when the schedule is built
        torch.set_rng_state(state["rng_torch"])
        kind, keys, *rest = state["rng_numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
        version, internal, gauss = state["rng_python"]
        random.setstate((version, tuple(internal), gauss))

    # -- results ------------------------------------------------------------------------------
    def record(self, stage: str, values: dict[str, float], prog_bar: tuple[str, ...] = ()) -> None:
        """Keep and log a stage's metrics; during fitting also append them to the history."""
        self.results[stage] = values
        for k, v in values.items():
            self.log(f"{stage}/{k}", v, prog_bar=k in prog_bar, sync_dist=False)
        trainer = self.trainer
        monitor = str(self.hparams.monitor)
        known = monitor.startswith("val/") and monitor[len("val/") :] in values
        if stage == "val" and trainer.state.fn == "fit" and not known:
            # at the first validation (the sanity check's, if any), not after a whole epoch in
            # Lightning's traceback from early stopping
            raise ConfigError(
                "task.monitor",
                f"'{monitor}' is not a validation metric of this run (it has "
                f"val/{', val/'.join(sorted(values))})",
            )
        if stage == "val" and trainer.state.fn == "fit" and not trainer.sanity_checking:
            lr = getattr(self, "epoch_lr", None)
            # every batch of the epoch has run before its validation; under DDP every rank's
            # rows (each rank runs this hook, so each joins), not rank 0's
            loss_sum, rows = self._loss_totals()
            loss = loss_sum / rows if rows else None
            if loss is not None:  # logged once per epoch whatever log_every_n_steps is
                self.log("train/loss_epoch", loss, sync_dist=False)
            entry = {"epoch": int(self.current_epoch), "lr": lr, "train_loss": loss}
            self.history.append({**entry, **values})
            self.step_schedule("validation", values)

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
        if batch.device == device:  # device-resident data: nothing to move
            return batch
        return batch.to(device, non_blocking=True)

    # -- optimisation -------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        """The optimiser for Lightning; the lr schedule is stepped here, not by Lightning
        (:meth:`step_schedule`), because Lightning skips the schedule's step at the end of the
        first epoch after a resume, and a resumed run must end as an uninterrupted one."""
        try:
            opt = self.optimizer_factory(self.model.parameters())
        except TypeError as e:  # e.g. an argument the optimiser does not take
            raise ConfigError("optimizer", str(e)) from e
        self.schedule = None
        if self.scheduler_factory is not None:
            try:
                self.schedule = self.scheduler_factory(opt)
            except TypeError as e:
                raise ConfigError("scheduler", str(e)) from e
            if self._schedule_state is not None:  # from the checkpoint being resumed
                self.schedule.load_state_dict(self._schedule_state)
        return {"optimizer": opt}

    def step_schedule(self, when: str, values: dict[str, float] | None = None) -> None:
        """Step the lr schedule: a ReduceLROnPlateau on the monitored metric after each
        validation while fitting (BARS: x0.1 on each non-improving one), other schedules every
        epoch or step (``scheduler_interval``)."""
        sched = getattr(self, "schedule", None)
        if sched is None:
            return
        plateau = isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau)
        if plateau and when == "validation" and values is not None:
            # the value as logged (float32), what Lightning's own stepping compared
            metric = torch.tensor(
                values[self.hparams.monitor.split("/", 1)[-1]], dtype=torch.float32
            )
            sched.step(float(metric))
        elif not plateau and when == self.hparams.scheduler_interval:
            sched.step()

    def on_train_epoch_end(self) -> None:
        self.step_schedule("epoch")

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.check_loss()
        self.step_schedule("step")

    def on_train_end(self) -> None:
        self.check_loss()
