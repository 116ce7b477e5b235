"""Evaluate a finished run again, e.g. under another protocol, without retraining.

    ranklab-evaluate outputs/studies/beauty_retrieval/sasrec_sampled_softmax/seed2021 \\
        task.sampled_eval=uniform

The run's resolved ``config.yaml`` is loaded, the ``key=value`` overrides are applied (only
evaluation settings make sense: ``task.sampled_eval``, ``task.exclude_seen``, ``task.ks``,
``data.eval_batch_size``, ``task.length_buckets``; ``+key=value`` adds a key that the
run's config predates), the data is built as for training and the run's best checkpoint
(weights only) is validated and tested. The result is printed and written to
``<run>/evaluations/<overrides>.json``; the run's own ``metrics.json`` is left untouched.
Retrieval runs also write each test user's ranks to ``<run>/evaluations/<overrides>.users.parquet``
(target, history_len, full_rank, full_candidates, sampled_rank, sampled_candidates), which
``ranklab-compare`` pairs between two runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ranklab.config import config_hash, upgrade_config
from ranklab.errors import ConfigError, DataError, RanklabError
from ranklab.train import _quiet_lightning, build, check_unread_keys
from ranklab.utils import atomic_write_json
from ranklab.warmstart import mismatch, other_draw, other_vocabularies


def evaluate(run_dir: Path, overrides: list[str], track: bool = False) -> dict[str, Any]:
    """Validate and test the run's best checkpoint under ``overrides``; write and return it.

    ``track``: also log the evaluation to the run's own W&B / MLflow trackers, as a run of job
    type ``evaluate`` in the training run's group, named ``<training run>/evaluate-<overrides>``.
    """
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise DataError("not a run directory (no config.yaml)", path=run_dir)
    cfg = upgrade_config(OmegaConf.load(cfg_path))  # runs from before optimizer/scheduler groups
    dotlist, added = [], []
    absent = object()  # a key set to null (memory_budget: null) is there all the same
    for o in overrides:
        key, sep, _ = o.partition("=")
        if not sep:
            raise ConfigError(o, "overrides are key=value")
        adding = key.startswith("+")  # a key the run's config predates, as in Hydra
        key = key.removeprefix("+")
        if adding:
            added.append(key)
        if not adding and OmegaConf.select(cfg, key, default=absent) is absent:
            raise ConfigError(key, f"not a key of {cfg_path} (prefix '+' to add it)")
        dotlist.append(o.removeprefix("+"))
    try:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(dotlist))
    except OmegaConfBaseException as e:
        raise ConfigError(str(e.full_key), str(e)) from e
    check_unread_keys(cfg, only=added)  # +seeed=1 would evaluate with the run's seed, silently
    _quiet_lightning()
    L.seed_everything(int(cfg.seed), verbose=False)
    datamodule, _, task = build(cfg)
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    if ckpt.is_file():
        checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
        state = checkpoint["state_dict"]
        keys = [o.partition("=")[0].lstrip("+") for o in overrides]  # what a refusal names
        if (why := mismatch(task.state_dict(), state)) is not None:
            raise ConfigError(
                ", ".join(keys) or "model",
                f"{ckpt} does not fit the model {'these overrides build' if keys else 'the run'}"
                f" ({why}): an evaluation keeps the run's model and its data encoding",
            )
        if other_draw(checkpoint, task):
            raise ConfigError(
                ", ".join(keys) or "data",
                "the synthetic data evaluated is another draw than the run's (other generator "
                "settings: another planted model and other rows), so the model would be scored "
                "on another task: an evaluation of a synthetic run keeps data.source as trained",
            )
        if other := other_vocabularies(checkpoint, task):
            raise ConfigError(
                ", ".join(keys) or "data",
                f"the data evaluated gives values other ids than the run's training data did "
                f"({', '.join(other)}: the vocabularies were fitted to other training rows), so "
                f"the embeddings of {ckpt} would be read for other values: evaluate on data "
                f"with the run's training rows (another test file is fine)",
            )
        task.load_state_dict(state)
    elif task.trainable:
        raise DataError("the run has no best checkpoint", path=ckpt)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.validate(task, datamodule=datamodule, verbose=False)
    trainer.test(task, datamodule=datamodule, verbose=False)
    out = {
        "run_dir": str(run_dir),
        "overrides": overrides,
        "checkpoint": str(ckpt) if ckpt.is_file() else None,
        "config_hash": config_hash(cfg),
        "protocol": getattr(task, "protocol", None),
        "val": task.results.get("val", {}),
        "test": task.results.get("test", {}),
    }
    name = "_".join(o.replace("/", "-") for o in overrides) or "default"
    evaluator = getattr(task, "evaluator", None)
    if evaluator is not None:  # per-user test ranks: the input of ranklab-compare's paired tests
        users_path = evaluator.write_users(
            run_dir / "evaluations" / f"{name}.users.parquet",
            datamodule.schema.meta.get("item_counts"),
        )
        if users_path is not None:
            out["users_file"] = str(users_path)
    atomic_write_json(run_dir / "evaluations" / f"{name}.json", out)
    if track:
        _track(cfg, out, name)
    return out


# trackers that keep runs apart (the CSV and TensorBoard loggers would write into the run's
# own folders, over its training logs) and the key each uses for the run's name
RUN_NAME_KEYS = {"wandb_logger": "name", "mlflow_logger": "run_name"}


def _track(cfg: Any, out: dict[str, Any], name: str) -> None:
    """Log an evaluation to the trackers the run used: its config and results, job type
    ``evaluate``, in the training run's group."""
    from hydra.utils import instantiate

    from ranklab.loggers import close_trackers, log_final_metrics

    loggers = []
    for conf in (cfg.get("logger") or {}).values():
        key = RUN_NAME_KEYS.get(str(conf.get("_target_", "")).rsplit(".", 1)[-1])
        if key is not None:
            trained = conf.get(key) or OmegaConf.select(cfg, "tracking.name", default="run")
            run_name = f"{trained}/evaluate-{name}"
            loggers.append(instantiate(conf, **{key: run_name, "job_type": "evaluate"}))
    if not loggers:
        raise ConfigError("--log", "the run used no W&B or MLflow logger (config key logger)")
    for lg in loggers:
        lg.log_hyperparams({"run_dir": out["run_dir"], "overrides": out["overrides"]})
        log_final_metrics(lg, {**out, "epochs": 0})
    close_trackers(loggers, failed=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("overrides", nargs="*", help="key=value, e.g. task.sampled_eval=uniform")
    ap.add_argument(
        "--log",
        action="store_true",
        help="also log to the run's W&B / MLflow trackers (job type evaluate, same group)",
    )
    a = ap.parse_args(argv)
    try:
        out = evaluate(a.run_dir, a.overrides, track=a.log)
    except RanklabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for split in ("val", "test"):
        vals = ", ".join(f"{k} {v:.5f}" for k, v in sorted(out[split].items()))
        print(f"{split}: {vals}")
    if out["protocol"]:  # retrieval runs record their evaluation protocol; ranking runs have none
        print(f"protocol: {out['protocol']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
