"""Logger factories and what every tracker gets at the end of a run.

W&B runs offline unless the user has configured a key; MLflow writes to a local store under
``outputs/`` unless a tracking URI is configured. Each run's config is logged once (by
:func:`ranklab.train.train`, never by Lightning's hyper-parameter hook), and its final metrics
reach each tracker's run summary (:func:`log_final_metrics`).
"""

from __future__ import annotations

import csv
import netrc
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from ranklab.utils import atomic_write, flatten


def wandb_has_key() -> bool:
    """True when W&B could log online: WANDB_API_KEY is set or `wandb login` wrote ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        rc = netrc.netrc(os.environ.get("NETRC", Path.home() / ".netrc"))
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("//")[-1].split("/")[0]
    return rc.authenticators(host) is not None


def wandb_logger(
    project: str = "ranklab",
    save_dir: str = ".",
    offline: bool | str = "auto",
    tags: Sequence[str] = (),
    flush_interval: float = 1.0,
    **kwargs: Any,
) -> WandbLogger:
    """A WandbLogger; ``offline="auto"`` means online exactly when a key is configured.

    WANDB_MODE=offline/online in the environment wins over everything, as in wandb itself.
    ``flush_interval``: seconds between W&B's writes of the run's ``.wandb`` file (its
    ``x_transaction_log_flush_interval``, 15 s by default there, where a run killed with SIGKILL
    within 15 s of its start lost everything it had logged; writing also goes on when its
    32 KiB buffer fills). Every other argument (``name``, ``group``, ``job_type``,
    ``log_model``, ``entity``, ``settings``...) goes to ``WandbLogger`` and from there to
    ``wandb.init``, which refuses a misspelt one.
    """
    import wandb

    settings = kwargs.pop("settings", None) or {}
    if not isinstance(settings, wandb.Settings):
        settings = wandb.Settings(**dict(settings))
    if "x_transaction_log_flush_interval" not in settings.model_fields_set:
        settings.x_transaction_log_flush_interval = float(flush_interval)
    if offline == "auto":
        offline = not wandb_has_key()
    mode = os.environ.get("WANDB_MODE")
    if mode in ("offline", "disabled", "dryrun"):
        offline = True
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    logger = WandbLogger(
        project=project,
        save_dir=save_dir,
        offline=bool(offline),
        tags=list(tags),
        settings=settings,
        **kwargs,
    )
    # Lightning always passes anonymous=None, and wandb warns on every run that the setting has
    # no effect: leave it out unless the user asked for it
    if logger._wandb_init.get("anonymous") is None:
        logger._wandb_init.pop("anonymous", None)
    return logger


def mlflow_logger(
    experiment_name: str = "ranklab",
    tracking_uri: str | None = None,
    store: str = "outputs/mlflow.db",
    tags: Sequence[str] = (),
    group: str | None = None,
    job_type: str | None = None,
    **kwargs: Any,
) -> MLFlowLogger:
    """An MLFlowLogger: ``tracking_uri`` (any MLflow URI: ``http://host:5000``, ``databricks``,
    ``sqlite:///...``) or, when null, the local SQLite database ``store`` (no server needed).

    MLflow has no run groups or job types: ``group``, ``job_type`` and each of ``tags`` become run
    tags (``ranklab.group``, ``ranklab.job_type``, ``<tag>: "true"``). Other arguments go to
    ``MLFlowLogger`` (``run_name``, ``log_model``, ``artifact_location``, ``run_id``, ...).
    """
    run_tags = {str(t): "true" for t in tags}
    if group:
        run_tags["ranklab.group"] = str(group)
    if job_type:
        run_tags["ranklab.job_type"] = str(job_type)
    if not tracking_uri:
        Path(store).parent.mkdir(parents=True, exist_ok=True)
        tracking_uri = f"sqlite:///{Path(store).resolve()}"
    from mlflow.exceptions import MlflowException

    try:
        return RanklabMLFlowLogger(
            experiment_name=experiment_name, tracking_uri=tracking_uri, tags=run_tags, **kwargs
        )
    except MlflowException as e:  # a store MLflow refuses (MLflow 3: a plain folder, file:...)
        from ranklab.errors import ConfigError

        text = " ".join(str(e.message).split())
        if "MLFLOW_ALLOW_FILE_STORE" in text:
            why = "MLflow 3 refuses a folder store (MLFLOW_ALLOW_FILE_STORE=true allows one)"
        else:
            why = text if len(text) <= 300 else text[:300] + "…"
        raise ConfigError(
            "logger.mlflow.tracking_uri",
            f"MLflow refuses {tracking_uri}: {why}; give a database (sqlite:///path/mlflow.db, "
            f"the default with tracking_uri null) or a server (http://host:5000)",
        ) from None


class RanklabMLFlowLogger(MLFlowLogger):
    """Lightning's MLFlowLogger, except:

    - Starting its run leaves the process's tracking URI as it was. Lightning calls
      ``mlflow.set_tracking_uri``, which also sets MLFLOW_TRACKING_URI in ``os.environ``: the
      next run composed in the same process (a study, a notebook) would resolve
      ``${oc.env:MLFLOW_TRACKING_URI}`` to this run's server, and every process started later
      would inherit it. The logger itself logs through its own client.
    - Continuing the MLflow run of a resumed run (:meth:`skip_held_points`, which ``train``
      calls; a ``run_id`` given by the user logs every point), it skips the points that run
      already holds from the checkpoint's step on.
      A killed process logged steps after its last checkpoint, which the resumed one logs again
      with the same values; MLflow cannot delete a metric's points, so without this those steps
      would appear twice in its history (TensorBoard's ``purge_step`` does the same from the
      other side: it hides the killed process's points). Points are counted per metric and
      step, as Lightning logs ``epoch`` twice at an epoch's last step (with the training and
      with the validation metrics) and the killed process may have logged one of the two.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # (metric name, step) -> points the continued run holds; read at the first log
        self._held: Counter[tuple[str, int]] | None = Counter()
        self._from_step = 0

    def skip_held_points(self, from_step: int) -> None:
        """Log no point the run already holds at ``from_step`` (the global step of the
        checkpoint being resumed) or later: the killed process logged those. The points are
        read at the first log (about 30 µs each on SQLite; earlier steps are not kept)."""
        self._held, self._from_step = None, from_step

    def _held_points(self) -> Counter[tuple[str, int]]:
        client, run_id = self.experiment, self.run_id
        # the row of the batch a checkpoint follows may be logged after it (step - 1)
        first = self._from_step - 1
        return Counter(
            (k, m.step)
            for k in client.get_run(run_id).data.metrics
            for m in client.get_metric_history(run_id, k)
            if m.step >= first
        )

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self._held is None:
            self._held = self._held_points()
        if self._held:
            at = step or 0  # where Lightning logs a point without a step

            def new(k: str) -> bool:
                # the name Lightning gives the metric in MLflow
                k = f"{self._prefix}{self.LOGGER_JOIN_CHAR}{k}" if self._prefix else k
                point = (re.sub("[^a-zA-Z0-9_/. -]+", "", k), at)
                if point not in self._held:
                    return True
                self._held[point] -= 1
                if not self._held[point]:
                    del self._held[point]
                return False

            metrics = {k: v for k, v in metrics.items() if new(k)}
            if not metrics:
                return
        super().log_metrics(metrics, step)

    @property
    def experiment(self) -> Any:
        before = os.environ.get("MLFLOW_TRACKING_URI")
        try:  # Lightning's property: rank 0 only, the run started on first use
            return MLFlowLogger.experiment.fget(self)  # type: ignore[attr-defined]
        finally:
            if os.environ.get("MLFLOW_TRACKING_URI") != before:
                import mlflow

                mlflow.set_tracking_uri(before)  # None: unset, as it was


class _KeptWriter(ExperimentWriter):
    """Lightning's CSV writer, keeping the rows already in ``metrics.csv`` (and their columns)
    where Lightning's deletes the file."""

    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                self.metrics_keys = next(csv.reader(f), [])


class CSVLogger(LightningCSVLogger):
    """Lightning's CSVLogger (``csv/metrics.csv``), except for a resumed run: Lightning's deletes
    the file of the run being continued, so the resumed file would start at the checkpoint.
    With ``keep_previous`` set (``train`` sets it when resuming) the earlier rows stay;
    :class:`ranklab.callbacks.Resumable` records how many rows each checkpoint has behind it
    and cuts the file back to them on resume (:meth:`keep_rows`), dropping the rows the killed
    process wrote after its checkpoint, which the resumed run writes again."""

    keep_previous = False

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None and self.keep_previous:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeptWriter(log_dir=self.log_dir)
        return LightningCSVLogger.experiment.fget(self)  # type: ignore[attr-defined]

    def rows(self) -> int:
        """The metric rows written so far (after flushing the buffered ones)."""
        self.save()
        path = self.experiment.metrics_file_path
        if not os.path.isfile(path):
            return 0
        with open(path, newline="") as f:
            return max(sum(1 for _ in csv.reader(f)) - 1, 0)

    def keep_rows(self, n: int, step: int) -> None:
        """Cut ``metrics.csv`` back to its header, its first ``n`` rows and the training rows of
        ``step`` right after them (written atomically): what a checkpoint taken after that
        step's batch has behind it."""
        path = self.experiment.metrics_file_path
        if not os.path.isfile(path):
            return
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        kept, header = rows[: n + 1], rows[0] if rows else []
        col = header.index("step") if "step" in header else None
        evaluated = [j for j, k in enumerate(header) if k.startswith(("val/", "test/", "final/"))]
        for row in rows[n + 1 :]:
            if col is None or row[col] != str(step) or any(row[j] for j in evaluated):
                break
            kept.append(row)

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as f:
                csv.writer(f).writerows(kept)

        atomic_write(Path(path), write)


def final_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The scalar results of a run as tracker keys: ``final/test/auc``, ``final/best_epoch``..."""
    keep = {k: metrics.get(k) for k in ("val", "test", "bayes", "best_epoch", "epochs")}
    keep["train_samples_per_s"] = metrics.get("train_samples_per_s")
    return {
        k: float(v)
        for k, v in flatten({"final": keep}).items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def log_final_metrics(logger: Logger, metrics: Mapping[str, Any], step: int | None = None) -> None:
    """Put the run's final metrics where each tracker shows a run's result: W&B's run summary,
    a last metrics row for the others (MLflow, TensorBoard, CSV), at ``step`` (the run's last
    training step; else its number of epochs). ``metrics.json`` stays the source of truth."""
    final = final_metrics(metrics)
    if isinstance(logger, WandbLogger):
        logger.experiment.summary.update(final)
        return
    if isinstance(logger, MLFlowLogger):  # its metric names allow no '@' (ndcg@10)
        final = {k.replace("@", "_at_"): v for k, v in final.items()}
    logger.log_metrics(final, step=int(step if step is not None else metrics.get("epochs") or 0))


TRACKERS_FILE = "trackers.json"


def tracker_runs(loggers: Sequence[Logger]) -> dict[str, dict[str, str]]:
    """The tracker runs a run logs to, by tracker (after the runs were started): W&B's run id,
    MLflow's run id and tracking URI. Saved in the run folder, they let a resumed run continue
    the same tracker runs (:func:`continue_kwargs`)."""
    out: dict[str, dict[str, str]] = {}
    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger.version:
            out["wandb"] = {"id": str(logger.version)}
        elif isinstance(logger, MLFlowLogger) and logger.run_id:
            out["mlflow"] = {"run_id": str(logger.run_id), "tracking_uri": logger._tracking_uri}
    return out


def continue_kwargs(
    logger: Logger, saved: Mapping[str, Any], step: int | None = None
) -> dict[str, Any]:
    """What ``logger`` (not started yet) needs to log to the tracker run in ``saved`` (a
    :func:`tracker_runs` record of the run being resumed) instead of starting a new one: W&B's
    ``id`` with ``resume="allow"``, MLflow's ``run_id`` (only on the same tracking URI, and
    while the run exists). TensorBoard, given the checkpoint's global ``step``, purges what the
    killed process logged from that step on (the resumed run logs it again). Empty when there
    is nothing to continue."""
    if isinstance(logger, TensorBoardLogger):
        return {} if step is None else {"purge_step": step}
    if isinstance(logger, WandbLogger):
        run_id = _saved_id(saved, "wandb", "id")
        return {"id": run_id, "resume": "allow"} if run_id else {}
    run_id = _saved_id(saved, "mlflow", "run_id")
    if not isinstance(logger, MLFlowLogger) or not run_id:
        return {}
    # a run id means nothing on another server: there, a new run
    if saved["mlflow"].get("tracking_uri") != logger._tracking_uri:
        return {}
    from mlflow.exceptions import MlflowException

    try:  # a run deleted since (or a store reset) gets a new one
        active = logger._mlflow_client.get_run(run_id).info.lifecycle_stage == "active"
    except MlflowException:
        active = False
    return {"run_id": run_id} if active else {}


def _saved_id(saved: Mapping[str, Any], tracker: str, key: str) -> str | None:
    entry = saved.get(tracker)
    value = entry.get(key) if isinstance(entry, Mapping) else None
    return value if isinstance(value, str) and value else None


def close_trackers(loggers: Sequence[Logger], failed: bool) -> None:
    """End each tracker's run. W&B keeps a run open in the process until ``finish``: without
    it the next run of a study or sweep would be logged into the same W&B run."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            if logger._experiment is not None:
                logger.experiment.finish(exit_code=1 if failed else 0)
        else:
            logger.finalize("failed" if failed else "success")
