"""``train(cfg) -> metrics``: one experiment from a composed config. The CLI is a thin wrapper.

ranklab-train model=dcnv2 data=frappe_x1 paths.data_dir=../shared/data seed=7
python -m ranklab.train experiment=frappe_x1_deepfm
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from ranklab.callbacks import ProgressBar, Throughput
from ranklab.config import CONF_DIR, config_hash, model_name, to_plain
from ranklab.console import print_summary
from ranklab.errors import RanklabError
from ranklab.utils import atomic_write_json, atomic_write_text, git_commit

log = logging.getLogger("ranklab")

# Lightning's advice about DataLoader workers does not apply: batches are slices of tensors.
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*LeafSpec.*")
warnings.filterwarnings("ignore", ".*overridden `transfer_batch_to_device`.*")


def _quiet_lightning() -> None:
    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.pytorch.accelerators.cuda",
        "lightning.fabric",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)


def build(cfg: DictConfig) -> tuple[Any, Any, Any]:
    """Instantiate (datamodule, model, task) from a config; the data is prepared here."""
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    # _partial_: objects (schema, model) are passed to the constructor as they are, not
    # merged into the config first (Hydra would turn a dataclass into a DictConfig)
    model = instantiate(cfg.model, _partial_=True, _convert_="all")(schema=datamodule.schema)
    hparams = {
        "model": to_plain(cfg.model),
        "data": str(datamodule.name),
        "schema": datamodule.schema.to_dict(),
        "seed": int(cfg.seed),
    }
    task = instantiate(cfg.task, _partial_=True, _convert_="all")(model=model, hparams=hparams)
    return datamodule, model, task


def train(cfg: DictConfig, callbacks: list[L.Callback] | None = None) -> dict[str, Any]:
    """Train, restore the best checkpoint, validate and test; write ``metrics.json``.

    ``callbacks`` are added to those the config names (e.g. a sweep's pruning callback).
    Returns the metrics dict (also written to ``<paths.output_dir>/metrics.json``).
    """
    extra_callbacks = list(callbacks or [])
    t_start = time.perf_counter()
    _quiet_lightning()
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))

    datamodule, model, task = build(cfg)
    throughput = Throughput()
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    callbacks += extra_callbacks
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a bar it cannot show
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    callbacks.append(throughput)
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, default_root_dir=str(run_dir)
    )
    for lg in loggers:
        lg.log_hyperparams(to_plain(cfg))

    if task.trainable:
        trainer.fit(task, datamodule=datamodule)
    else:  # nothing to learn (e.g. the most-popular baseline): evaluate as it is
        log.info("model %s has no trainable parameters: skipping fit", model_name(cfg))
    ckpt_cb = next((c for c in callbacks if isinstance(c, ModelCheckpoint)), None)
    ckpt = ckpt_cb.best_model_path if ckpt_cb is not None and ckpt_cb.best_model_path else None
    trainer.validate(task, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
    trainer.test(task, datamodule=datamodule, ckpt_path=ckpt, verbose=False)

    bayes = datamodule.meta.get("bayes")
    metrics: dict[str, Any] = {
        "model": model_name(cfg),
        "data": str(datamodule.name),
        "seed": int(cfg.seed),
        "val": task.results.get("val", {}),
        "test": task.results.get("test", {}),
        "best_epoch": task.best_epoch(),
        "epochs": int(trainer.current_epoch),
        "history": task.history,
        "bayes": {s: bayes[s] for s in ("val", "test") if s in bayes} if bayes else None,
        "protocol": getattr(task, "protocol", None),
        "n_params": int(sum(p.numel() for p in model.parameters())),
        "train_samples_per_s": throughput.samples_per_s,
        "wall_time_s": time.perf_counter() - t_start,
        "git_commit": git_commit(),
        # CPU results depend on the intra-op thread count (reduction order), GPU results on
        # the card and build: a rerun gives the same digits where these match
        "environment": environment(trainer),
        "config_hash": config_hash(cfg),
        "experiment_hash": config_hash(cfg, ignore_seed=True),
        "data_fingerprint": datamodule.meta.get("fingerprint"),
        "checkpoint": ckpt,
        "run_dir": str(run_dir),
    }
    if trainer.is_global_zero:
        atomic_write_json(run_dir / "metrics.json", metrics)
        for lg in loggers:
            _mirror_summary(lg, metrics)
        if cfg.get("print_summary", True):
            print_summary(metrics)
    return metrics


def environment(trainer: L.Trainer) -> dict[str, Any]:
    """What besides the config decides the digits: torch build, threads, device."""
    device = trainer.strategy.root_device
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
    }


def _mirror_summary(logger: Any, metrics: dict[str, Any]) -> None:
    """W&B keeps the final metrics in the run summary (metrics.json stays the source of truth)."""
    from lightning.pytorch.loggers import WandbLogger

    if isinstance(logger, WandbLogger):
        from ranklab.utils import flatten

        flat = {
            k: v for k, v in flatten({"final": metrics}).items() if isinstance(v, int | float | str)
        }
        logger.experiment.summary.update(flat)


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    except RanklabError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    objective = cfg.get("objective")
    return metrics["val"].get(objective.split("/")[-1]) if objective else None


def main() -> None:
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    _hydra_main()


if __name__ == "__main__":
    main()
