"""What a sweep leaves in its directory, rewritten from the study after every run:

- ``trials.csv`` and ``trials.md``: one row per trial (state, value, parameters, error, run dir);
- ``experiment/<study>_best.yaml``: the best trial as a ready-to-run ``experiment`` config;
- ``optimization_history.png`` and ``param_importances.png``.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from omegaconf import OmegaConf
from optuna.trial import FrozenTrial, TrialState

from ranklab.config import conf_dir
from ranklab.sweep.spec import DRIVER_KEYS, SweepSpec
from ranklab.sweep.study import retry_of, superseded
from ranklab.utils import atomic_write_text


@dataclass
class Outputs:
    """Paths written, and the counts of trials by state."""

    counts: dict[str, int]
    best: FrozenTrial | None
    retried: int = 0
    files: dict[str, Path] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def best_config_name(spec: SweepSpec) -> str:
    return f"{spec.study_name}_best"


def write_outputs(spec: SweepSpec, study: optuna.Study) -> Outputs:
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = study.best_trial if complete else None
    out = Outputs(counts=counts, best=best, retried=len(superseded(trials)))
    spec.dir.mkdir(parents=True, exist_ok=True)

    rows = trial_rows(spec, trials)
    out.files["trials.csv"] = spec.dir / "trials.csv"
    atomic_write_text(out.files["trials.csv"], _csv(rows))
    out.files["trials.md"] = spec.dir / "trials.md"
    atomic_write_text(out.files["trials.md"], _markdown(spec, rows, best, counts, out.retried))
    if best is not None:
        path = spec.dir / "experiment" / f"{best_config_name(spec)}.yaml"
        atomic_write_text(path, best_config(spec, best))
        out.files["best"] = path
    _plots(spec, study, complete, out)
    return out


def trial_rows(spec: SweepSpec, trials: list[FrozenTrial]) -> list[dict[str, Any]]:
    retried = superseded(trials)
    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        state = t.state.name.lower()
        if t.number in retried:
            state += " (retried)"
        duration = t.duration.total_seconds() if t.duration is not None else None
        row: dict[str, Any] = {
            "trial": t.number,
            "state": state,
            spec.metric: t.value,
            "duration_s": round(duration, 2) if duration is not None else None,
        }
        for p in spec.params:
            row[p.key] = p.text(t.params[p.key]) if p.key in t.params else None
        row["retry_of"] = retry_of(t)
        row["error"] = t.user_attrs.get("error") if t.state != TrialState.COMPLETE else None
        row["worker"] = t.user_attrs.get("worker")
        row["run_dir"] = t.user_attrs.get("run_dir")
        rows.append(row)
    return rows


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)
    return buf.getvalue()


def _markdown(
    spec: SweepSpec,
    rows: list[dict[str, Any]],
    best: FrozenTrial | None,
    counts: dict[str, int],
    retried: int,
) -> str:
    lines = [
        f"# Sweep `{spec.study_name}`",
        "",
        f"{spec.metric} ({spec.conf.direction}), {len(rows)} trials: "
        + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        + (f" ({retried} of the failed ones were retried)" if retried else ""),
        "",
    ]
    if best is not None:
        lines += [f"Best: trial {best.number}, {spec.metric} = {best.value:.6f}", ""]
    cols = [c for c in (rows[0] if rows else {}) if c != "worker"]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for c in cols:
            text = _cell(c, r[c], spec.metric)
            if c == spec.metric and best is not None and r["trial"] == best.number:
                text = f"**{text}**"
            cells.append(text.replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(column: str, value: Any, metric: str) -> str:
    if value is None:
        return ""
    if column == metric and isinstance(value, float):
        return f"{value:.6f}"
    if column == "duration_s":
        return f"{value:.1f}"
    if isinstance(value, str):  # a parameter's override text: shorten long floats
        try:
            return f"{float(value):.4g}" if "." in value or "e" in value else value
        except ValueError:
            return value
    return str(value)


def best_config(spec: SweepSpec, best: FrozenTrial) -> str:
    """The best trial as an ``experiment`` config: the base experiment, then the fixed
    overrides and the best values (config groups as ``override /group: option``)."""
    from ranklab.sweep.space import parse_value

    defaults: list[Any] = []
    if spec.conf.experiment:
        defaults.append(f"/experiment/{spec.conf.experiment}")
    body = OmegaConf.create({})
    left_out = []
    settings: list[tuple[str, Any]] = []
    for o in spec.conf.fixed:
        key, _, text = str(o).lstrip("+").partition("=")
        if key.startswith(("paths.", "hydra.")) or key in DRIVER_KEYS:
            left_out.append(str(o))
            continue
        settings.append((key, parse_value(text)))
    for p in spec.params:
        settings.append((p.key, p.decode(best.params[p.key])))
    threads = best.user_attrs.get("threads")  # set by the worker (--workers N), not the sweep
    if threads is not None:
        settings.append(("threads", int(threads)))
    for key, value in settings:
        if "." not in key and (conf_dir() / key).is_dir():  # a config group
            defaults = [
                d for d in defaults if not (isinstance(d, dict) and f"override /{key}" in d)
            ]
            defaults.append({f"override /{key}": value})
        else:
            OmegaConf.update(body, key, value, force_add=True)
    name = best_config_name(spec)
    head = [
        "# @package _global_",
        f"# Best trial of sweep '{spec.study_name}': trial {best.number}, "
        f"{spec.metric} = {best.value:.6f} ({spec.conf.direction}).",
        f"# Run dir: {best.user_attrs.get('run_dir')}",
        f"# Run it:  ranklab-train -cd {spec.dir} experiment={name}",
        f"# or copy it to conf/experiment/ and run: ranklab-train experiment={name}",
    ]
    if left_out:
        head.append(f"# Set for the sweep, not part of the experiment: {' '.join(left_out)}")
    doc: dict[str, Any] = {}
    if defaults:
        doc["defaults"] = defaults
    doc.update(OmegaConf.to_container(body))  # type: ignore[arg-type]
    return "\n".join(head) + "\n" + OmegaConf.to_yaml(OmegaConf.create(doc))


def _plots(spec: SweepSpec, study: optuna.Study, complete: list[FrozenTrial], out: Outputs) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.importance import PedAnovaImportanceEvaluator
    from optuna.visualization.matplotlib import (
        plot_optimization_history,
        plot_param_importances,
    )

    finite = [t for t in complete if t.value is not None and math.isfinite(t.value)]
    plots = {
        "optimization_history.png": lambda: plot_optimization_history(
            study, target_name=spec.metric
        ),
        "param_importances.png": lambda: plot_param_importances(
            study, evaluator=PedAnovaImportanceEvaluator(), target_name=spec.metric
        ),
    }
    for name, plot in plots.items():
        need = 1 if name.startswith("optimization") else 2
        if len(finite) < need or (name.startswith("param") and not spec.params):
            out.skipped[name] = f"needs {need} complete trial(s) and a search space"
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = plot()
            fig = ax.figure
            fig.set_size_inches(8, 5)
            fig.tight_layout()
            fig.savefig(spec.dir / name, dpi=110)
            plt.close(fig)
            out.files[name] = spec.dir / name
        except (ValueError, RuntimeError) as e:  # e.g. no parameter varies
            out.skipped[name] = str(e).splitlines()[0]
            plt.close("all")
