"""Run directories -> one polars frame -> mean ± std tables (Markdown, LaTeX, CSV) with tests.

Only ``metrics.json`` files are read: they are the source of truth for every table. A table
never pools runs that differ in anything but the seed: a row is one experiment
(``experiment_hash``, the config without the seed), labelled by the config keys in which it
differs from the other experiments of the same data and model (``DeepFM (model.dropout=0.1)``).
An experiment whose runs were made on other data (``data_fingerprint``) or warm-started from
other weights (the source run's config hash) is split into as many rows, labelled by those
too. Runs of one row made by other code versions or in other environments (thread count,
device, torch build) are pooled, with a note that names them. The same experiment and seed
found twice counts once; smoke runs are left out. Pooling on purpose (``by=("data",
"model")``) says what it pooled.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from scipy import stats

from ranklab.errors import ConfigError
from ranklab.utils import flatten, hash_object

ID_COLUMNS = ("data", "model", "label", "experiment", "seed", "run_dir")
ROW = ("data", "label")  # one row per experiment (the label is unique within a data set)
HEADERS = {"label": "model"}
LOWER_IS_BETTER = ("logloss", "ne", "mse", "mae", "wall_time_s", "gap_to_bayes", "n_params")
# metrics whose best value is a target, not an end of the scale: calibration (mean prediction
# over mean label) is best at 1, whichever side a model misses it on
TARGETS = {"calibration": 1.0}


def lower_is_better(metric: str) -> bool:
    """Whether the best mean of ``metric`` is its lowest: losses and errors (log loss, NE, MSE,
    MAE), gaps, and every cost (time, memory, latency, parameter count under ``efficiency/``)."""
    name = metric.rsplit("/", 1)[-1]
    return name in LOWER_IS_BETTER or metric.startswith("efficiency/")


def badness(metric: str, value: float) -> float:
    """``value`` of ``metric`` on a scale where lower is better: the distance to the target
    for calibration, the value itself for losses and costs, its negative otherwise."""
    target = TARGETS.get(metric.rsplit("/", 1)[-1])
    if target is not None:
        return abs(value - target)
    return value if lower_is_better(metric) else -value


# metrics that count things, shown without decimals
COUNTS = ("n_params", "efficiency/parameters")
ALPHA = 0.05


@dataclass
class Runs:
    """The runs found: ``df`` one row per (experiment, seed); ``configs`` each experiment's
    flattened config (None where its metrics.json predates the record); ``notes`` what was
    left out or merged, to print beside the table."""

    df: pl.DataFrame
    configs: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _run_folders(paths: Iterable[str | Path]) -> tuple[list[Path], list[Path]]:
    """The folders at or below ``paths`` holding a metrics.json, and those holding a
    status.json but no metrics.json (runs that stopped before their end), in one walk."""
    import os

    from ranklab.rundir import STATUS_FILE

    finished: set[Path] = set()
    stopped: set[Path] = set()
    for p in map(Path, paths):
        if p.is_file() and p.name == "metrics.json":
            finished.add(p.parent)
            continue
        for root, _, files in os.walk(p) if p.is_dir() else ():
            if "metrics.json" in files:
                finished.add(Path(root))
            elif STATUS_FILE in files:
                stopped.add(Path(root))
    return sorted(finished), sorted(stopped)


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Every directory holding a metrics.json at or below the given paths, sorted."""
    return _run_folders(paths)[0]


def unfinished_runs(paths: Iterable[str | Path]) -> list[tuple[Path, str]]:
    """Run folders at or below ``paths`` that wrote no metrics.json (interrupted, killed,
    still running, failed), with the status their ``status.json`` gives."""
    return _with_status(_run_folders(paths)[1])


def _with_status(folders: list[Path]) -> list[tuple[Path, str]]:
    from ranklab.rundir import read_status

    return [(d, str(read_status(d).get("status") or "unknown")) for d in folders]


def _value(v: Any) -> str:
    return json.dumps(v, separators=(",", ":")) if isinstance(v, list | dict) else str(v)


def differing_keys(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Flattened config keys (seed aside) whose values are not the same in all ``configs``."""
    keys = sorted({k for c in configs for k in c} - {"seed"})
    missing = object()
    return [k for k in keys if len({_value(c.get(k, missing)) for c in configs}) > 1]


def provenance(m: Mapping[str, Any]) -> dict[str, Any]:
    """What decides a run's results besides its config, as its metrics.json records it: the
    data's fingerprint (the files' contents, or the generator's parameters) and, for a warm
    start, the config hash of the run whose weights it loaded (``init_from`` is hashed as the
    path typed, and the file at that path may have been replaced since)."""
    init = m.get("initialized_from")
    return {
        # data made from the seed (data.source.seed=${seed}) differs by seed, as it should
        "data_fingerprint": None if data_follows_seed(m) else m.get("data_fingerprint"),
        "init_from.config_hash": init.get("config_hash") if isinstance(init, dict) else None,
    }


def data_follows_seed(m: Mapping[str, Any]) -> bool:
    """Whether a run's data source takes a value from its seed (``data.source.seed=${seed}``:
    fresh data for every seed), so that its data fingerprint differs from seed to seed."""
    return any(str(k).startswith("data.source.") for k in m.get("seeded_keys") or ())


def _split_by_provenance(records: list[tuple[Path, dict[str, Any]]]) -> set[str]:
    """Give the runs of one experiment that differ in :func:`provenance` an experiment of their
    own (``<experiment_hash>#<provenance hash>``); returns the experiments split so."""
    seen: dict[str, set[str]] = defaultdict(set)
    for _, m in records:
        seen[m["experiment"]].add(hash_object(provenance(m)))
    split = set()
    for _, m in records:
        if len(seen[m["experiment"]]) > 1:
            m["experiment"] = f"{m['experiment']}#{hash_object(provenance(m))[:8]}"
            split.add(m["experiment"])
    return split


def _labels(
    records: list[tuple[Path, dict[str, Any]]], split: AbstractSet[str] = frozenset()
) -> tuple[dict[str, str], dict]:
    """experiment -> row label, and experiment -> flattened config. Where an experiment was
    split by :func:`provenance`, the configs of its data and model carry the provenance too, so
    that the labels name what tells its rows apart (``data_fingerprint=...``)."""
    configs: dict[str, dict[str, Any] | None] = {}
    origin: dict[str, dict[str, Any]] = {}
    by_model: dict[tuple[str, str], list[str]] = defaultdict(list)
    seeded: set[str] = set()  # keys that differ between the runs of one experiment: not labels
    for _, m in records:
        exp = m["experiment"]
        flat = flatten(m["config"], sep=".") if m.get("config") else None
        if flat is not None:  # what follows the seed is labelled so, not by one run's value
            own = set(m.get("seeded_keys") or ())
            flat = {k: "${seed}" if k in own else v for k, v in flat.items()}
        if exp not in configs:
            configs[exp] = flat
            origin[exp] = provenance(m)
            by_model[(m["data"], m["model"])].append(exp)
        elif flat is not None and configs[exp] is not None:
            # runs of one experiment differ only in the seed and what derives from it
            seeded.update(k for k in flat if _value(flat[k]) != _value(configs[exp].get(k)))
    for exps in by_model.values():
        if any(e in split for e in exps):
            for e in exps:
                if configs[e] is not None:
                    short = {k: v[:12] if isinstance(v, str) else v for k, v in origin[e].items()}
                    configs[e] = {**configs[e], **short}
    labels = {}
    for (_, model), exps in by_model.items():
        if len(exps) == 1:
            labels[exps[0]] = model
            continue
        known = [configs[e] for e in exps]
        if any(c is None for c in known):  # written before metrics.json held its config
            labels.update({e: f"{model} [{_short(e)}]" for e in exps})
            continue
        every = differing_keys(known)  # type: ignore[arg-type]
        missing = "–"
        for keys in ([k for k in every if k not in seeded], every):
            for e in exps:
                shown = ", ".join(f"{k}={_value(configs[e].get(k, missing))}" for k in keys)
                labels[e] = f"{model} ({shown})"
            if len({labels[e] for e in exps}) == len(exps):  # else: a seeded key tells them apart
                break
    return labels, configs


def _short(experiment: str) -> str:
    """An experiment's hash, shortened: ``1a2b3c4d`` (``1a2b3c4d#5e6f7a8b`` once split)."""
    head, _, tail = experiment.partition("#")
    return head[:8] + (f"#{tail}" if tail else "")


def load_runs(paths: Iterable[str | Path], include_smoke: bool = False) -> Runs:
    """Read every run below ``paths``: one row per (experiment, seed), labelled."""
    records: list[tuple[Path, dict[str, Any]]] = []
    notes: list[str] = []
    finished, stopped = _run_folders(paths)
    smoke = []
    # a run stopped before its end (Ctrl-C, SIGTERM, a kill, still running) has no
    # metrics.json: only its status.json says it was there
    failed = [f"{run} ({status})" for run, status in _with_status(stopped)]
    for run in finished:
        m = json.loads((run / "metrics.json").read_text())
        if m.get("status") not in (None, "finished"):  # e.g. diverged: no test results
            failed.append(f"{run} ({m['status']})")
            continue
        if m.get("smoke") and not include_smoke:
            smoke.append(run)
            continue
        # runs from before experiment_hash existed: (data, model) is all that is known
        m["experiment"] = m.get("experiment_hash") or f"{m.get('data')}/{m.get('model')}"
        records.append((run, m))
    if smoke:
        notes.append(f"left out {len(smoke)} smoke run(s) (debug=..., limited batches)")
    if failed:
        notes.append(f"left out {len(failed)} run(s) that did not finish: {', '.join(failed)}")
    split = _split_by_provenance(records)
    labels, configs = _labels(records, split)
    seen: dict[tuple[str, Any], list[tuple[Path, dict[str, Any]]]] = defaultdict(list)
    for run, m in records:
        seen[(m["experiment"], m.get("seed"))].append((run, m))
    rows = []
    kept: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (exp, seed), dups in seen.items():
        run, m = dups[0]
        kept[exp].append(m)
        if len(dups) > 1:
            notes.append(_duplicate_note(labels[exp], seed, dups))
        flat = {
            k: v
            for k, v in flatten(m).items()
            if isinstance(v, int | float | str | None)
            and not k.startswith(("history", "config/", "reliability", "tracking", "tags"))
        }
        flat.update(run_dir=str(run), label=labels[exp], experiment=exp)
        rows.append(flat)
    for exp, ms in kept.items():
        notes += _mixed_notes(labels[exp], ms)
    notes += _data_notes(records, labels)
    df = pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()
    return Runs(df, configs, notes)


def _data_notes(records: list[tuple[Path, dict[str, Any]]], labels: dict[str, str]) -> list[str]:
    """A note where rows of one data config (the same ``data`` settings, seed aside) read other
    data (``data_fingerprint``): the files changed between their runs, so the rows' difference
    is not the models' alone, whichever rows are compared."""
    groups: dict[tuple[str, str], dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for _, m in records:
        fingerprint = m.get("data_fingerprint")
        if not fingerprint or not isinstance(m.get("config"), dict) or data_follows_seed(m):
            continue
        seeded = set(m.get("seeded_keys") or ())
        data = {
            k: v
            for k, v in flatten({"data": m["config"].get("data") or {}}, sep=".").items()
            if k not in seeded
        }
        groups[(str(m.get("data")), hash_object(data))][str(fingerprint)[:12]].add(
            labels[m["experiment"]]
        )
    notes = []
    for (name, _), by_fingerprint in groups.items():
        if len(by_fingerprint) > 1:
            shown = "; ".join(
                f"{fp}: {', '.join(sorted(rows))}" for fp, rows in sorted(by_fingerprint.items())
            )
            notes.append(
                f"data '{name}': the same data config read other data in some runs "
                f"(data_fingerprint {shown}): the files changed between runs"
            )
    return notes


def _origins(m: Mapping[str, Any]) -> dict[str, str]:
    """Where a run's digits came from besides its config and data: the code and the
    environment (torch build, thread count, device), as metrics.json records them."""
    env = m.get("environment") if isinstance(m.get("environment"), dict) else {}
    commit = str(m.get("git_commit") or "")
    out = {"code": commit[:10] + ("-dirty" if commit.endswith("-dirty") else "")} if commit else {}
    return {**out, **{k: str(v) for k, v in sorted(env.items())}}


def _mixed_notes(label: str, runs: list[dict[str, Any]]) -> list[str]:
    """One note per origin (code version, torch, threads, device) in which a row's runs differ:
    the row pools them, and says which seeds ran where."""
    notes = []
    origins = [_origins(m) for m in runs]
    for key in sorted({k for o in origins for k in o}):
        seeds: dict[str, list[str]] = defaultdict(list)
        for m, o in zip(runs, origins):
            seeds[o.get(key, "unknown")].append(str(m.get("seed")))
        if len(seeds) > 1:
            what = "code versions" if key == "code" else f"{key} values"
            shown = "; ".join(
                f"{key} {v}: seed{'s' if len(s) > 1 else ''} {', '.join(sorted(s))}"
                for v, s in seeds.items()
            )
            notes.append(f"{label}: its runs come from {len(seeds)} {what} ({shown})")
    return notes


def _duplicate_note(label: str, seed: Any, dups: list[tuple[Path, dict[str, Any]]]) -> str:
    kept, others = dups[0][0], [str(r) for r, _ in dups[1:]]
    note = (
        f"{label}, seed {seed}: {len(dups)} runs of the same experiment and seed, counted once "
        f"({kept}; also {', '.join(others)})"
    )
    values = [flatten({"val": m.get("val", {}), "test": m.get("test", {})}) for _, m in dups]
    differ = sorted(k for k in values[0] if len({v.get(k) for v in values}) > 1)
    if differ:
        shown = " vs ".join(f"{v.get(differ[0])}" for v in values)
        origins = [_origins(m) for _, m in dups]
        keys = {k for o in origins for k in o}
        where = sorted(k for k in keys if len({o.get(k) for o in origins}) > 1)
        why = f"they differ in {', '.join(where)}" if where else "compare their environment"
        note += f"; their metrics differ ({differ[0]}: {shown}): {why}"
    return note


def collect_runs(paths: Iterable[str | Path], include_smoke: bool = False) -> pl.DataFrame:
    """One row per (experiment, seed): identifiers plus every scalar metric, as ``test/auc``."""
    return load_runs(paths, include_smoke).df


def pooling_notes(runs: Runs, by: Sequence[str]) -> list[str]:
    """For a grouping other than one row per experiment: which rows pool several experiments,
    and the config keys in which those differ."""
    notes = []
    for key, sub in runs.df.group_by(list(by), maintain_order=True):
        exps = sub["experiment"].unique(maintain_order=True).to_list()
        if len(exps) < 2:
            continue
        configs = [runs.configs.get(e) for e in exps]
        row = " | ".join(str(k) for k in key)
        if any(c is None for c in configs):
            what = "(their configs are not recorded)"
        else:
            keys = differing_keys(configs)  # type: ignore[arg-type]
            shown = [
                f"{k} ∈ {{{', '.join(sorted({_value(c.get(k)) for c in configs}))}}}" for k in keys
            ]  # type: ignore[union-attr]
            what = "differing in " + "; ".join(shown)
        notes.append(f"pooled in '{row}': {len(exps)} experiments, {sub.height} runs, {what}")
    return notes


def missing_notes(df: pl.DataFrame, metrics: Sequence[str], by: Sequence[str] = ROW) -> list[str]:
    """A note for each row and metric that some of the row's runs lack (``null`` in
    metrics.json: an AUC undefined on a split with one class, a cost not measured): its mean
    and std are over the other runs, while ``n`` counts them all."""
    notes = []
    for key, sub in df.group_by(list(by), maintain_order=True):
        for m in metrics:
            if m not in sub.columns:
                continue
            gone = sub.filter(pl.col(m).is_null() | pl.col(m).is_nan())
            if gone.height:
                seeds = (
                    ", ".join(str(s) for s in gone["seed"].to_list())
                    if "seed" in sub.columns
                    else "?"
                )
                row = " | ".join(str(k) for k in key)
                notes.append(
                    f"'{row}': {m} has no value in {gone.height} of its {sub.height} runs (seed "
                    f"{seeds}); its mean and std are over the other {sub.height - gone.height}"
                )
    return notes


def aggregate(df: pl.DataFrame, metrics: Sequence[str], by: Sequence[str] = ROW) -> pl.DataFrame:
    """Mean, sample std (ddof 1) and count over seeds for each group (``n`` counts the runs;
    a run without a value of a metric is out of its mean: :func:`missing_notes`)."""
    aggs = [pl.len().alias("n")]
    for m in metrics:
        aggs += [pl.col(m).mean().alias(f"{m}:mean"), pl.col(m).std(ddof=1).alias(f"{m}:std")]
    return df.group_by(list(by), maintain_order=True).agg(aggs).sort(list(by))


def resolve_baseline(
    df: pl.DataFrame, baseline: str, key: str = "label", group: Sequence[str] = ("data",)
) -> str:
    """The ``key`` value of the baseline row: an exact ``key`` value, or a model name that
    names exactly one row per data set."""
    if baseline in set(df[key].to_list()):
        return baseline
    if key == "label" and "model" in df.columns:
        labels = df.filter(pl.col("model") == baseline)["label"].unique().sort().to_list()
        if len(labels) == 1:
            return labels[0]
        if len(labels) > 1:
            raise ConfigError(
                "--baseline",
                f"'{baseline}' names {len(labels)} rows, name one: {'; '.join(labels)}",
            )
    raise ConfigError("--baseline", f"no row '{baseline}' (rows: {sorted(set(df[key].to_list()))})")


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (NaNs stay NaN, out of the family).
    Hand-written: scipy has only false_discovery_control (Benjamini-Hochberg/Yekutieli)."""
    idx = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    order = sorted(idx, key=lambda i: pvalues[i])
    out = list(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * pvalues[i]))
        out[i] = running
    return out


def significance(
    df: pl.DataFrame,
    metrics: Sequence[str],
    baseline: str,
    key: str = "label",
    group: Sequence[str] = ("data",),
    correction: str | None = None,
) -> pl.DataFrame:
    """p-value of every row against the ``baseline`` row on every metric, per data set.

    Paired t-test over the seeds both have when they have the same seeds, each once (the same
    seed gives the same data order and initialisation streams), Welch's t-test otherwise (a
    row pooling several experiments holds a seed more than once); ``test`` says which.
    ``correction="holm"`` adjusts all p-values of the table together (Holm).
    """
    out = []
    # no group columns (--by model): the whole table is one group (group_by([]) yields none)
    groups = df.group_by(list(group), maintain_order=True) if group else [((), df)]
    for gkey, sub in groups:
        base = sub.filter(pl.col(key) == baseline)
        for (name,), other in sub.group_by([key], maintain_order=True):
            for metric in metrics:
                p, test = math.nan, "-"
                a = base.select("seed", pl.col(metric).alias("a")).drop_nulls()
                b = other.select("seed", pl.col(metric).alias("b")).drop_nulls()
                if name != baseline and a.height >= 2 and b.height >= 2:
                    joined = a.join(b, on="seed")
                    once = a["seed"].is_unique().all() and b["seed"].is_unique().all()
                    if once and joined.height >= 2 and joined.height == a.height == b.height:
                        p = float(stats.ttest_rel(joined["b"], joined["a"]).pvalue)
                        test = "paired t"
                    else:
                        p = float(stats.ttest_ind(b["b"], a["a"], equal_var=False).pvalue)
                        test = "Welch t"
                row = {**dict(zip(group, gkey)), key: name, "metric": metric}
                out.append({**row, "p_value": p, "test": test})
    sig = pl.DataFrame(out)
    if correction == "holm" and sig.height:
        sig = sig.with_columns(pl.Series("p_value", holm(sig["p_value"].to_list())))
    elif correction not in (None, "holm"):
        raise ConfigError("correction", f"must be holm or none, got '{correction}'")
    return sig


def significance_note(sig: pl.DataFrame, baseline: str, key: str, holm_corrected: bool) -> str:
    """The footnote: what ``*`` means, the tests actually used (and for which rows when both
    were), and the rows left untested."""
    used = sig.filter(pl.col("test") != "-")
    tested = set(used[key].to_list())
    others = sig.filter(pl.col(key) != baseline)[key].unique(maintain_order=True).to_list()
    skipped = [r for r in others if r not in tested]  # rows with no test on any metric
    few = f"not tested (fewer than 2 seeds on a side): {', '.join(map(str, skipped))}"
    if not used.height:
        return f"No test against {baseline}: " + few + "."
    tests = {
        "paired t": "paired t-test over shared seeds",
        "Welch t": "Welch's t-test (the seeds are not shared one to one)",
    }
    kinds = [t for t in tests if t in set(used["test"])]
    parts = []
    for t in kinds:
        rows = used.filter(pl.col("test") == t)[key].unique(maintain_order=True).to_list()
        parts.append(tests[t] + (f" for {', '.join(map(str, rows))}" if len(kinds) > 1 else ""))
    note = f"`*`: p < {ALPHA} against {baseline} on that metric, " + "; ".join(parts)
    if holm_corrected:
        note += f"; Holm-corrected over the table's {used.height} comparisons"
    return note + (f"; {few}" if skipped else "") + "."


def relaimpr(
    table: pl.DataFrame, metric: str, baseline: str, key: str = "label", group=("data",)
) -> pl.DataFrame:
    """Add ``RelaImpr <metric>``: (AUC - 0.5) / (AUC_baseline - 0.5) - 1, in percent (the DIN
    paper's relative improvement, eq. 10), from the mean of ``metric`` per row."""
    mean = f"{metric}:mean"
    base = table.filter(pl.col(key) == baseline).select([*group, pl.col(mean).alias("_b")])
    return (
        table.join(base, on=list(group), how="left")
        .with_columns(((pl.col(mean) - 0.5) / (pl.col("_b") - 0.5) - 1).alias(f"RelaImpr {metric}"))
        .drop("_b")
    )


def fmt_mean_std(mean: float | None, std: float | None, digits: int = 5) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _ranked(
    table: pl.DataFrame, metric: str, group: Sequence[str] = ()
) -> tuple[set[int], set[int]]:
    """Row indices holding the best and the second-best mean of ``metric``, within each
    ``group`` (e.g. each data set: models are ranked against those on the same data)."""
    col = table[f"{metric}:mean"].to_list()
    keys = table.select(list(group)).rows() if group else [()] * table.height
    best: set[int] = set()
    second: set[int] = set()
    for g in dict.fromkeys(keys):
        rows = [i for i, k in enumerate(keys) if k == g]
        scores = {
            i: badness(metric, col[i])
            for i in rows
            if col[i] is not None and not math.isnan(col[i])
        }
        values = sorted(set(scores.values()))
        best |= {i for i, v in scores.items() if values and v == values[0]}
        second |= {i for i, v in scores.items() if len(values) > 1 and v == values[1]}
    return best, second


def with_pvalues(
    table: pl.DataFrame, sig: pl.DataFrame, key: str, group: Sequence[str] = ()
) -> pl.DataFrame:
    """``table`` with a ``<metric>:p`` column per tested metric: each row's p-value against the
    baseline of its own group (data set), from :func:`significance`."""
    if not sig.height:
        return table
    wide = sig.pivot(on="metric", index=[*group, key], values="p_value")
    metrics = [c for c in wide.columns if c not in (*group, key)]
    return table.join(wide.rename({m: f"{m}:p" for m in metrics}), on=[*group, key], how="left")


def _cells(
    table: pl.DataFrame,
    metrics: Sequence[str],
    digits: int,
    group: Sequence[str],
    bold: str,
    second: str,
    star: str,
    pm: str,
) -> list[list[str]]:
    ranked = {m: _ranked(table, m, group) for m in metrics}
    out = []
    for i, row in enumerate(table.iter_rows(named=True)):
        cells = []
        for m in metrics:
            mean, std = row[f"{m}:mean"], row[f"{m}:std"]
            # counts are whole numbers; times (ms) and memory (MB) need no five decimals
            d = 0 if m in COUNTS else min(digits, 3) if m.startswith("efficiency/") else digits
            c = fmt_mean_std(mean, None, d)
            if i in ranked[m][0]:
                c = bold.format(c)
            elif i in ranked[m][1]:
                c = second.format(c)
            if std is not None and not math.isnan(std) and mean is not None:
                c += f" {pm} {std:.{d}f}"
            p = row.get(f"{m}:p")
            if p is not None and p < ALPHA:
                c += star
            cells.append(c)
        out.append(cells)
    return out


def to_markdown(
    table: pl.DataFrame,
    metrics: Sequence[str],
    by: Sequence[str] = ROW,
    digits: int = 5,
    group: Sequence[str] | None = None,
    extra: Sequence[str] = (),
) -> str:
    """Markdown table: the best mean per metric in bold, the second best underlined, ranked
    within each ``group`` (default: ``by`` but its last column, i.e. per data set); ``*``
    after a value whose ``<metric>:p`` column (:func:`with_pvalues`) is < 0.05; ``extra``
    columns (RelaImpr) in percent."""
    group = list(by[:-1]) if group is None else list(group)
    head = [HEADERS.get(b, b) for b in by] + ["n", *metrics, *extra]
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] * len(by) + ["---:"] * (1 + len(metrics) + len(extra))) + "|",
    ]
    cells = _cells(table, metrics, digits, group, "**{}**", "<ins>{}</ins>", "*", "±")
    for row, values in zip(table.iter_rows(named=True), cells):
        ext = [_percent(row[e]) for e in extra]
        lines.append(
            "| " + " | ".join([*(str(row[b]) for b in by), str(row["n"]), *values, *ext]) + " |"
        )
    return "\n".join(lines) + "\n"


def _percent(v: float | None) -> str:
    return "–" if v is None or math.isnan(v) else f"{100 * v:+.2f}%"


def to_latex(
    table: pl.DataFrame,
    metrics: Sequence[str],
    by: Sequence[str] = ROW,
    digits: int = 5,
    group: Sequence[str] | None = None,
    extra: Sequence[str] = (),
) -> str:
    """A booktabs table: best mean in bold, second best underlined (within each ``group``, as
    :func:`to_markdown`), ``$^*$`` for p < 0.05."""
    group = list(by[:-1]) if group is None else list(group)
    esc = lambda s: str(s).replace("_", r"\_").replace("&", r"\&").replace("%", r"\%")  # noqa: E731
    head = [*(esc(HEADERS.get(b, b)) for b in by), "$n$", *(esc(m) for m in [*metrics, *extra])]
    lines = [
        r"\begin{tabular}{" + "l" * len(by) + "r" * (1 + len(metrics) + len(extra)) + "}",
        r"\toprule",
        " & ".join(head) + r" \\",
        r"\midrule",
    ]
    cells = _cells(
        table,
        metrics,
        digits,
        group,
        r"\textbf{{{}}}",
        r"\underline{{{}}}",
        "$^*$",
        r"$\pm$",
    )
    for row, values in zip(table.iter_rows(named=True), cells):
        ext = [esc(_percent(row[e])) for e in extra]
        lines.append(
            " & ".join([*(esc(row[b]) for b in by), str(row["n"]), *values, *ext]) + r" \\"
        )
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"
