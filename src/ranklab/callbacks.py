"""Lightning callbacks: training throughput (train time only), a progress bar showing it, one log
line per epoch, the checkpoint a run resumes from (also on SIGTERM), and the best checkpoint
(which a run resumed in another folder carries over)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.utilities import rank_zero_only

from ranklab.console import metric_names

log = logging.getLogger("ranklab.progress")


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

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a run resumed mid-epoch continues that epoch without on_train_epoch_start
        self.on_train_epoch_start(trainer, pl_module)

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
    """TQDM bar that also shows the epoch's mean training loss so far and training samples per
    second (from the Throughput callback)."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        loss = pl_module.epoch_loss() if hasattr(pl_module, "epoch_loss") else None
        if loss is not None and trainer.training:
            items["train/loss"] = f"{loss:.4f}"
        for cb in trainer.callbacks:
            if isinstance(cb, Throughput) and cb.last:
                items["samples/s"] = f"{cb.last:,.0f}"
        return items


class EpochLog(L.Callback):
    """One log line per training epoch: train loss (epoch mean), the validation metrics of that
    epoch (the monitored one first), lr, training samples/s and the epoch's wall time.

    The lines go to the run's ``train.log`` and, where logging reaches a console (ranklab-train,
    ranklab-study), to it: when output is piped or the progress bar is off, this is the
    progress report (a bar would rewrite itself into the file)."""

    def __init__(self, monitor: str = "val/auc", max_metrics: int = 4) -> None:
        self.monitor = monitor.split("/", 1)[-1]
        self.max_metrics = max_metrics
        self._t0 = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a run resumed mid-epoch continues that epoch without on_train_epoch_start
        self._t0 = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # validation of this epoch has run by now (Lightning 2: before on_train_epoch_end)
        epoch = int(trainer.current_epoch)
        history = getattr(pl_module, "history", [])
        last = history[-1] if history and history[-1].get("epoch") == epoch else {}
        parts = [f"epoch {epoch + 1}/{trainer.max_epochs}"]
        # under DDP the history's (over every rank); else this process's epoch mean
        loss = last.get("train_loss") if trainer.world_size > 1 else None
        if loss is None and hasattr(pl_module, "epoch_loss"):
            loss = pl_module.epoch_loss()
        if loss is not None:
            parts.append(f"train/loss {loss:.5f}")
        names = [self.monitor] if self.monitor in last else []
        names += [k for k in metric_names(last) if k not in (*names, "epoch", "lr", "train_loss")]
        names = [k for k in names if "/len" not in k and "/pop" not in k][: self.max_metrics]
        parts += [f"val/{k} {last[k]:.5f}" for k in names if isinstance(last[k], float)]
        lr = getattr(pl_module, "epoch_lr", None)  # the lr the epoch trained with
        if lr is not None:
            parts.append(f"lr {lr:.3g}")
        for cb in trainer.callbacks:
            if isinstance(cb, Throughput) and cb.last:
                parts.append(f"{cb.last:,.0f} samples/s")
        parts.append(f"{time.perf_counter() - self._t0:.1f} s")
        log.info("  ".join(parts))


def non_finite(module: torch.nn.Module) -> str | None:
    """The name of the first parameter or buffer of ``module`` holding a NaN or an infinity,
    or None when all are finite."""
    for name, t in module.state_dict(keep_vars=True).items():
        if t.is_floating_point() and not bool(torch.isfinite(t.detach()).all()):
            return name
    return None


class BestCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, resumable from another folder's checkpoint.

    Lightning restores the best score and the best files only when the checkpoint was written
    in this very folder; from another folder (``ckpt_path=<other run>/checkpoints/last.ckpt``,
    as a sweep's retried trial resumes) it keeps only ``best_model_path`` and forgets the score,
    so the first validation after the resume became "the best" however it compared, and the
    run ended unlike the uninterrupted one. Here the best files are copied into this folder
    and the whole state restored, pointing at the copies; where a file is gone, Lightning's
    own behaviour (with its warning) is kept.
    """

    @property
    def state_key(self) -> str:
        # ModelCheckpoint's key: checkpoints written before this class resume into it
        return "ModelCheckpoint" + super().state_key.removeprefix(type(self).__qualname__)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old = state_dict.get("dirpath", self.dirpath)
        if self.dirpath is None or old is None or Path(old) == Path(self.dirpath):
            return super().load_state_dict(state_dict)
        best = {str(p) for p in state_dict.get("best_k_models", {})}
        best |= {str(state_dict.get(k) or "") for k in ("best_model_path", "kth_best_model_path")}
        best.discard("")
        if not best or not all(Path(p).is_file() for p in best):
            return super().load_state_dict(state_dict)
        moved = {p: str(Path(self.dirpath) / Path(p).name) for p in best}
        if rank_zero_only.rank == 0:
            Path(self.dirpath).mkdir(parents=True, exist_ok=True)
            for src, dst in moved.items():
                partial = Path(dst).with_name(Path(dst).name + ".partial")
                shutil.copyfile(src, partial)
                os.replace(partial, dst)  # never a half-copied best file
        log.info("resumed from %s: its best checkpoint copied into %s", old, self.dirpath)
        state = {**state_dict, "dirpath": self.dirpath, "last_model_path": ""}
        state["best_k_models"] = {moved[str(p)]: v for p, v in state_dict["best_k_models"].items()}
        for key in ("best_model_path", "kth_best_model_path"):
            if state_dict.get(key):
                state[key] = moved[str(state_dict[key])]
        super().load_state_dict(state)


class Resumable(L.Callback):
    """Keeps ``<dirpath>/last.ckpt``, the state a run resumes from (``ckpt_path=auto``).

    It is written between epochs (after the first batch of each epoch after the first: model,
    optimiser, lr schedule after its step, early-stopping and best-checkpoint state, the data
    order, the task's history and RNG states), every ``every_n_steps`` training steps if set,
    and when SIGTERM or SIGUSR1 arrives (what a scheduler sends before preemption): Lightning
    stops after the current batch, this saves the state there, and ``train`` exits with
    128 + the signal number, never 0. Written to a temporary file and renamed, so a kill during
    the write leaves the previous checkpoint; never written from weights or buffers holding a NaN
    or an infinity (the previous one is kept), so a diverged run keeps its last finite state.
    """

    def __init__(self, dirpath: str, every_n_steps: int | None = None) -> None:
        self.path = Path(dirpath) / "last.ckpt"
        self.every_n_steps = every_n_steps
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self._trainer: L.Trainer | None = None
        self._resumed_rows: list[int] | None = None
        self._resumed_step = -1
        self._flush_csv = False
        self._pending = False  # a signal this rank had, not yet agreed on (several ranks)

    def save(self, trainer: L.Trainer) -> None:
        module = trainer.lightning_module
        check_loss = getattr(module, "check_loss", None)
        if check_loss is not None:  # the step's loss, when its check is deferred (a GPU)
            check_loss()
        bad = non_finite(module)
        if bad is not None:
            # a loss can still be finite while a weight or a running statistic has overflowed;
            # the state is not worth resuming from, so the previous (finite) checkpoint stays
            log.warning(
                "not writing %s at epoch %d, step %d: %s is not finite (kept the previous one)",
                self.path,
                trainer.current_epoch,
                trainer.global_step,
                bad,
            )
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        trainer.save_checkpoint(tmp, weights_only=False)  # the whole training state
        if trainer.is_global_zero:
            os.replace(tmp, self.path)
        self._flush_csv = True

    def state_dict(self) -> dict[str, Any]:
        # the rows each CSV log holds at this checkpoint (flushed first): a resumed run cuts
        # the file back to them (ranklab.loggers.CSVLogger)
        trainer = self._trainer
        if trainer is None or not trainer.is_global_zero:  # only rank 0 writes the files
            return {}
        # (the row of the batch this checkpoint follows is written after it: csv_step names it)
        rows = [lg.rows() for lg in self._csv_loggers()]
        return {"csv_rows": rows, "csv_step": trainer.global_step - 1}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resumed_rows = state_dict.get("csv_rows")
        self._resumed_step = int(state_dict.get("csv_step", -1))

    def _csv_loggers(self) -> list[Any]:
        from ranklab.loggers import CSVLogger

        trainer = self._trainer
        loggers = trainer.loggers if trainer is not None else []
        return [lg for lg in loggers if isinstance(lg, CSVLogger)]

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rows, self._resumed_rows = self._resumed_rows, None
        if rows is not None and trainer.is_global_zero:
            for lg, n in zip(self._csv_loggers(), rows, strict=False):
                lg.keep_rows(n, self._resumed_step)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, i: int
    ) -> None:
        if self._flush_csv:  # the row of the batch the checkpoint followed, on disk now
            self._flush_csv = False
            for lg in self._csv_loggers():
                lg.save()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # chain after Lightning's own SIGTERM handler (which stops the loop after the batch);
        # SIGUSR1 takes the same path
        if trainer.world_size > 1:
            # Lightning's SIGTERM handler (registered after this hook, this one chained in it)
            # broadcasts from inside the signal handler, and its loop then stops the signalled
            # rank alone: the ranks' collectives stopped matching and the run hung. Under DDP
            # this handler only notes the signal, and on_train_batch_end agrees on it.
            trainer._signal_connector._sigterm_notifier_fn = lambda signum, frame: None
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            previous = signal.getsignal(sig)
            self._previous[sig] = previous

            def handler(signum: int, frame: Any, previous: Any = previous) -> None:
                self.signum = signum
                if trainer.world_size > 1:
                    # several ranks: only noted here; on_train_batch_end agrees on it with the
                    # other ranks, so that all of them stop after the same batch
                    self._pending = True
                else:
                    trainer._signal_connector.received_sigterm = True
                if callable(previous):
                    # an outer handler (a sweep worker's) turns the signal into Ctrl-C, which
                    # would end the run without a checkpoint: here it stops after the batch
                    # and saves, and train() raises Interrupted (exit status 128 + signum)
                    with contextlib.suppress(KeyboardInterrupt):
                        previous(signum, frame)

            signal.signal(sig, handler)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.restore_signals()

    def restore_signals(self) -> None:
        """Put back the handlers this replaced. Lightning calls no teardown hook after an
        exception, and its own signal teardown then reinstates this one's handlers (it saved
        them after ``on_fit_start``): ``train`` calls this once fit has raised, or they would
        outlive the run (a sweep worker's next trial, a notebook)."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        if trainer.world_size > 1 and self._agree(trainer, pl_module):
            trainer._signal_connector.received_sigterm = True  # every rank, after this batch
        # after the first batch of each epoch after the first: the previous epoch, its
        # validation and its lr step are in the state, and Lightning resumes mid-epoch (its
        # best-supported restart) from the next batch of the same order
        first = i == 0 and trainer.current_epoch > 0
        # not after an epoch's last batch: a run restored there skips that epoch's validation
        # (the next epoch's first batch saves soon after, with the validation in it)
        last = i + 1 >= trainer.num_training_batches
        every = self.every_n_steps and trainer.global_step % self.every_n_steps == 0
        if first or (every and not last):
            self.save(trainer)

    def _agree(self, trainer: L.Trainer, pl_module: L.LightningModule) -> bool:
        """Several ranks: has any had a signal? (one tiny all-reduce, which every rank joins.)
        Every rank then takes the highest signal number, so all exit with the same status."""
        import torch.distributed as dist

        mine = torch.tensor([float(self.signum or 0) if self._pending else 0.0])
        agreed = int(
            trainer.strategy.reduce(mine.to(pl_module.device), reduce_op=dist.ReduceOp.MAX)
        )
        if agreed:
            self.signum = agreed
        return bool(agreed)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # several ranks: a signal after the last batch's agreement (the last validation, an
        # early stop) would be lost. fit's last.ckpt stays (as for a signal during validation)
        # and the run stops here, before its final validation and test, with 128 + signum.
        if trainer.world_size > 1 and self._agree(trainer, pl_module):
            from ranklab.errors import Interrupted

            log.warning(
                "received signal %d at the end of training: kept %s; rerun with ckpt_path=auto "
                "to continue",
                self.signum,
                self.path,
            )
            raise Interrupted(128 + int(self.signum or signal.SIGTERM))

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if isinstance(exception, SIGTERMException):
            self.signum = self.signum or signal.SIGTERM
            if trainer.state.fn != "fit":
                # after fit (its validate and test): the model holds the best checkpoint's
                # weights and the loops' state is the end of fit; saved here, a resumed run
                # trained on from there (after an early stop, epochs the run never had). The
                # checkpoint fit wrote stays, and the resumed run redoes fit's rest and the test.
                return
            if trainer.validating or trainer.sanity_checking:
                # Lightning cannot resume a validation loop: a run restored from a state saved
                # mid-validation skips that validation (and early stopping then fails). The
                # checkpoint written after the epoch's first batch (or the last of every N
                # steps) stays, and the resumed run redoes the rest of the epoch.
                kept = "kept " + str(self.path) if self.path.exists() else "no checkpoint yet"
                log.warning(
                    "received signal %d during validation of epoch %d: %s; rerun with "
                    "ckpt_path=auto to continue",
                    self.signum,
                    trainer.current_epoch,
                    kept,
                )
                return
            self.save(trainer)
            log.warning(
                "received signal %d: saved %s at epoch %d, step %d; rerun with ckpt_path=auto "
                "to continue",
                self.signum,
                self.path,
                trainer.current_epoch,
                trainer.global_step,
            )
