"""Run many experiments in one process (models x seeds), resumably, for studies and tables."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from rich.console import Console

from ranklab.config import compose, config_hash, set_tracking

console = Console(soft_wrap=True)  # one line per run, even when piped


def run_grid(
    base: Sequence[str],
    variants: Iterable[tuple[str, Sequence[str]]],
    seeds: Sequence[int],
    out: str | Path,
    train_missing: bool = True,
    study: str | None = None,
) -> list[Path]:
    """Train every (variant, seed) under ``out/<variant>/seed<seed>``; return the run dirs.

    A run whose directory already holds a metrics.json for the same configuration (same
    config hash) is not trained again, so an interrupted study resumes where it stopped. With
    ``train_missing=False`` nothing is trained: the finished runs found are returned. Trackers
    name each run ``<study>/<variant>/seed<seed>`` in group ``<study>`` (job type ``study``).
    """
    from ranklab.train import read_status, train

    study = study or Path(out).name

    out = Path(out)
    runs = []
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
            cfg = compose(args)
            held = read_status(run).get("config_hash")
            if held in (None, config_hash(cfg)):  # an interrupted run continues from last.ckpt
                cfg.ckpt_path = "auto"  # (another config's run there is trained over, as asked)
            set_tracking(cfg, f"{study}/{name}/seed{seed}", study, "study", tag=study)
            done = run / "metrics.json"
            finished = json.loads(done.read_text()).get("config_hash") if done.is_file() else None
            if finished == config_hash(cfg):
                console.print(f"[dim]{name} seed {seed}: done already ({run})[/]")
            elif not train_missing:
                if finished is None:
                    continue
                console.print(
                    f"[yellow]{name} seed {seed}: finished with another config ({run})[/]"
                )
            else:
                m = train(cfg)
                shown = ", ".join(f"{k} {v:.5f}" for k, v in list(m["test"].items())[:3])
                console.print(
                    f"{name} seed {seed}: test {shown} (best epoch {m['best_epoch']}, "
                    f"{m['wall_time_s']:.0f}s)"
                )
            runs.append(run)
    return runs
