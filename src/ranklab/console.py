"""What a run shows and keeps as text: the end-of-run summary table (rich) and the run's log file.

Every run writes ``<run dir>/train.log``: ranklab's log lines (data, one line per epoch, the
final metrics) and Lightning's. Under ``ranklab-train`` Hydra's job logging already writes that
file; studies, sweeps and ``train(cfg)`` called from Python get the same file from
:func:`run_log`.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ORDER = ("auc", "gauc", "logloss", "ne", "calibration")
LOG_FILE = "train.log"
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] %(message)s"  # Hydra's, conf/hydra/
# Lightning's loggers keep their lines to themselves when imported before logging is configured
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric")


def fmt(v: Any, digits: int = 5) -> str:
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return "" if v is None else str(v)


def metric_names(values: dict[str, Any]) -> list[str]:
    """Metric names in the order the summary shows them (the usual CTR ones first)."""
    names = [k for k in ORDER if k in values]
    return names + [k for k in values if k not in names]


def summary_table(metrics: dict[str, Any]) -> Table:
    """One table: val and test metrics, the Bayes-optimal ceiling when known, and run facts.

    The run directory is not in the table (a narrow terminal or a pipe would cut it): the
    caller prints it on a line of its own."""
    bayes = metrics.get("bayes") or {}
    m = metrics
    table = Table(title=f"ranklab · {m.get('model')} on {m.get('data')} · seed {m.get('seed')}")
    table.add_column("metric", overflow="fold")
    table.add_column("val", justify="right")
    table.add_column("test", justify="right")
    if bayes:
        table.add_column("Bayes-optimal (test)", justify="right")
    names = metric_names({**metrics.get("val", {}), **metrics.get("test", {})})
    for k in names:
        row = [k, fmt(metrics.get("val", {}).get(k)), fmt(metrics.get("test", {}).get(k))]
        if bayes:
            row.append(fmt(bayes.get("test", {}).get(k)))
        table.add_row(*row)
    table.add_section()
    facts = [
        # 1-based, as the epoch lines count (metrics.json's best_epoch is Lightning's 0-based)
        ("best epoch", None if (b := metrics.get("best_epoch")) is None else b + 1),
        ("epochs run", metrics.get("epochs")),
        ("parameters", f"{metrics.get('n_params', 0):,}"),
        ("train samples/s", f"{metrics.get('train_samples_per_s', 0):,.0f}"),
        ("wall time (s)", fmt(metrics.get("wall_time_s"), 1)),
    ]
    eff = metrics.get("efficiency") or {}
    if eff:  # what the result cost
        # the keys say mb; the figures are MiB (ru_maxrss KiB / 1024, max_memory_allocated / 2**20)
        facts.append(("peak memory (MiB)", f"{eff['peak_rss_mb']:,.0f} RSS"))
        if "peak_gpu_allocated_mb" in eff:
            facts.append(("peak GPU memory (MiB)", f"{eff['peak_gpu_allocated_mb']:,.0f}"))
        for size in (1, 4096):
            lat = eff.get(f"latency_ms_batch{size}")
            if lat:
                facts.append((f"latency, batch {size}", f"{lat['p50']:.3f} / {lat['p99']:.3f} ms"))
    env = metrics.get("environment")
    if env:  # the digits depend on these too
        threads = f"{env['threads']} threads"
        facts.append(("environment", f"torch {env['torch']}, {env['device']}, {threads}"))
    for k, v in facts:
        table.add_row(k, "", str(v), *([""] if bayes else []))
    return table


def print_summary(metrics: dict[str, Any]) -> None:
    """The summary table, then the run directory on a line of its own (never cut)."""
    console = Console()
    if not console.is_terminal:  # a pipe or a file: rich would assume 80 columns
        console = Console(width=120)
    console.print(summary_table(metrics))
    print(f"run dir: {metrics.get('run_dir')}", flush=True)


def note_error(run_dir: Path, message: str) -> None:
    """Append the error a run stopped on to its ``train.log`` (the CLI prints it to stderr; the
    log file is what is left to read later). Written directly: a log record would also reach
    the console handlers and print the error twice."""
    record = logging.LogRecord("ranklab", logging.ERROR, __file__, 0, "error: %s", (message,), None)
    with open(Path(run_dir) / LOG_FILE, "a", encoding="utf-8") as f:
        f.write(logging.Formatter(LOG_FORMAT).format(record) + "\n")


@contextlib.contextmanager
def run_log(run_dir: Path) -> Iterator[None]:
    """For the duration of a run, send ranklab's and Lightning's log lines (INFO and up) to
    ``<run_dir>/train.log``.

    Under Hydra (or wherever the root logger has handlers) only Lightning needs routing: its
    lines go to the root handlers instead of its own stream handler, so they reach Hydra's
    ``train.log`` and console once. Elsewhere a file handler is added to ranklab's and
    Lightning's loggers, plus a stderr handler for ranklab's warnings (which Python's last-resort
    handler printed before there was any handler).
    """
    path = (Path(run_dir) / LOG_FILE).resolve()
    root = logging.getLogger()
    ours = logging.getLogger("ranklab")
    lightning = [logging.getLogger(n) for n in LIGHTNING_LOGGERS]
    saved = [(lg, lg.propagate, list(lg.handlers)) for lg in lightning]
    saved_level = ours.level
    added: list[tuple[logging.Logger, logging.Handler]] = []
    if root.handlers:
        for lg in lightning:
            for h in list(lg.handlers):
                if type(h) is logging.StreamHandler:
                    lg.removeHandler(h)
            lg.propagate = True
    writes_file = any(
        isinstance(h, logging.FileHandler) and Path(h.baseFilename).resolve() == path
        for h in root.handlers
    )
    from ranklab.rundir import rank_zero

    # under DDP the other ranks' Hydra logs go nowhere, and their lines (their own share of the
    # train loss) were added to rank 0's train.log: only rank 0 writes the run's files
    if not writes_file and rank_zero():
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler.setLevel(logging.INFO)
        for lg in (ours, *lightning):
            lg.addHandler(handler)
            added.append((lg, handler))
        if not root.handlers:
            err = logging.StreamHandler(sys.stderr)
            err.setLevel(logging.WARNING)
            ours.addHandler(err)
            added.append((ours, err))
    if ours.getEffectiveLevel() > logging.INFO:
        ours.setLevel(logging.INFO)
    try:
        yield
    finally:
        for lg, h in added:
            lg.removeHandler(h)
        for h in {h for _, h in added}:
            h.close()
        for lg, propagate, handlers in saved:
            lg.propagate = propagate
            lg.handlers[:] = handlers
        ours.setLevel(saved_level)
