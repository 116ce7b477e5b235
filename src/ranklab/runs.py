"""Run many experiments in one process (models x seeds), resumably, for studies and tables."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from rich.console import Console

from ranklab.config import compose_checked, config_hash, set_tracking

console = Console(soft_wrap=True)  # one line per run, even when piped


def run_grid(
    base: Sequence[str],
    variants: Iterable[tuple[str, Sequence[str]]],
    seeds: Sequence[int],
    out: str | Path,
    train_missing: bool = True,
    study: str | None = None,
) -> tuple[list[Path], list[str], list[str]]:
    """Train every (variant, seed) under ``out/<variant>/seed<seed>``; return the run dirs,
    notes on the runs left out, and the runs that diverged (``<variant> seed <seed>``: a
    result, not tabulated; the others still train, and a rerun does not train them again).

    A run whose directory already holds a metrics.json for the same configuration (same
    config hash) is not trained again, so an interrupted study resumes where it stopped; one
    that holds another config's run (the study's file was edited since) fails before anything
    is trained: results are never trained over. With
    ``train_missing=False`` nothing is trained: the finished runs of the same config are
    returned, and those of another config left out with a note. Trackers
    name each run ``<study>/<variant>/seed<seed>`` in group ``<study>`` (job type ``study``).
    """
    from ranklab.errors import ConfigError, Diverged
    from ranklab.rundir import describe_other_config, read_status
    from ranklab.train import check_config, train

    study = study or Path(out).name

    out = Path(out)
    planned = []
    for name, overrides in variants:
        for seed in seeds:
            run = out / name / f"seed{seed}"
            args = [
                *base,
                *overrides,
                f"seed={seed}",
                f"paths.output_dir={run}",
                "trainer.enable_progress_bar=false",
                "print_summary=false",
            ]
            try:
                cfg = compose_checked(args)
                check_config(cfg)
            except ConfigError as e:
                where = f"variant '{name}': {' '.join(map(str, overrides))}"
                raise ConfigError(e.key, f"{e.message} (in {where})") from None
            planned.append((name, seed, run, cfg))
    for _name, _seed, run, cfg in planned if train_missing else ():  # all, before any is trained
        held = read_status(run)
        if held and held.get("config_hash") != config_hash(cfg):
            # the study's file changed since this run: its results are never trained over
            raise ConfigError(
                "--out",
                f"{run} holds a run of another config ({held.get('status')}; "
                f"{describe_other_config(cfg, held)}): the study changed since it ran; give "
                f"another --out, or delete that folder to train it again",
            )
    runs, notes, diverged = [], [], []
    for name, seed, run, cfg in planned:
        cfg.ckpt_path = "auto"  # an interrupted run continues from its last.ckpt
        set_tracking(cfg, f"{study}/{name}/seed{seed}", study, "study", tag=study)
        done = run / "metrics.json"
        held = json.loads(done.read_text()) if done.is_file() else {}
        finished = held.get("config_hash")
        if finished == config_hash(cfg) and held.get("status") == "diverged":
            # the same config and seed diverge again: not trained again, nor tabulated
            diverged.append(f"{name} seed {seed}")
            notes.append(f"left out {run}: it diverged ({held.get('error')})")
            console.print(f"[red]{name} seed {seed}: diverged ({run})[/]")
            continue
        if finished == config_hash(cfg):
            console.print(f"[dim]{name} seed {seed}: done already ({run})[/]")
        elif not train_missing:
            if finished is not None:  # the study's file changed since: not this study's run
                notes.append(f"left out {run}: a run of another config (the study changed since)")
                console.print(
                    f"[yellow]{name} seed {seed}: finished with another config ({run})[/]"
                )
            elif status := read_status(run).get("status"):  # stopped, killed, running
                notes.append(f"left out {run}: it did not finish ({status})")
            continue
        else:
            try:
                m = train(cfg)
            except Diverged as e:  # a result of this config: the others still run
                diverged.append(f"{name} seed {seed}")
                notes.append(f"left out {run}: it diverged ({e})")
                console.print(f"[red]{name} seed {seed}: diverged: {e}[/]")
                continue
            shown = ", ".join(f"{k} {v:.5f}" for k, v in list(m["test"].items())[:3])
            best = m.get("best_epoch")  # 0-based in metrics.json; 1-based as epoch lines count
            best = "-" if best is None else best + 1
            console.print(
                f"{name} seed {seed}: test {shown} (best epoch {best}, {m['wall_time_s']:.0f}s)"
            )
        runs.append(run)
    return runs, notes, diverged
