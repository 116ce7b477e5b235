"""``ranklab-sweep sweep=<name> [overrides] [--workers N] [--report-only]``.

The command checks the sweep config (composing the training config as the trials will), creates
the study in its storage if it does not exist yet, runs ``N`` local workers (``N > 1``: worker
processes, started together), then writes the outputs. Running the same command again continues
the study; running it on another machine against the same database adds workers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.exc import OperationalError

from ranklab.errors import RanklabError, StopRequested
from ranklab.sweep.spec import SweepSpec, check_spec, load_spec
from ranklab.utils import atomic_write_text


class WorkerFailed(RuntimeError):
    """A local worker process exited with an error (its own output says why)."""


def run_sweep(
    spec: SweepSpec, workers: int = 1, check: bool = True, quiet: bool = False
) -> dict[str, object]:
    """Check, create or load the study, run ``workers`` local workers, write the outputs.

    Returns a summary: ``counts`` (trials by state), ``best`` (number, value, params),
    ``files`` (outputs written) and ``wall_s``.
    """
    import optuna

    from ranklab.sweep.outputs import write_outputs
    from ranklab.sweep.study import budget, grid_size, init_study, safe_url

    t0 = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if check:
        check_spec(spec)
    study = init_study(spec)
    say = (lambda *a, **k: None) if quiet else print
    grid = grid_size(spec)
    total = min(spec.trials, grid or spec.trials)
    say(
        f"sweep '{spec.study_name}': {total} trials in total "
        f"({spec.conf.sampler.name} sampler{f', grid of {grid}' if grid else ''}, "
        f"{spec.conf.pruner.name} pruner), {spec.metric} ({spec.conf.direction}); "
        f"{len(study.trials)} in the study already",
        flush=True,
    )
    say(f"  storage {safe_url(spec.storage_url)}  dir {spec.dir}", flush=True)
    spec.dir.mkdir(parents=True, exist_ok=True)
    shown = spec.to_yaml().replace(spec.storage_url, safe_url(spec.storage_url))
    atomic_write_text(spec.dir / "sweep.yaml", shown)

    fixes_threads = any(str(o).startswith(("threads=", "+threads=")) for o in spec.conf.fixed)
    threads = None if workers == 1 or fixes_threads else max(1, (os.cpu_count() or 1) // workers)
    failed: WorkerFailed | None = None
    if workers == 1:
        from ranklab.sweep.worker import run_worker  # torch and Lightning: only where trials run

        run_worker(spec, threads=threads)
    else:
        try:
            _run_processes(spec, workers, threads)
        except WorkerFailed as e:  # the others finished: still write what the study holds
            failed = e

    study = optuna.load_study(study_name=spec.study_name, storage=spec.storage_url)
    out = write_outputs(spec, study)
    wall = time.perf_counter() - t0
    summary: dict[str, object] = {
        "counts": out.counts,
        "best": None,
        "files": {k: str(v) for k, v in out.files.items()},
        "skipped": out.skipped,
        "wall_s": wall,
    }
    say(
        f"done in {wall:.1f} s: "
        + ", ".join(f"{n} {s}" for s, n in sorted(out.counts.items()))
        + (f" ({out.retried} of the failed ones were retried)" if out.retried else ""),
        flush=True,
    )
    if out.best is not None:
        best = out.best
        summary["best"] = {"number": best.number, "value": best.value, "params": best.params}
        say(f"best: trial {best.number}, {spec.metric} {best.value:.5f}", flush=True)
        for p in spec.params:
            say(f"  {p.key}={p.text(best.params[p.key])}", flush=True)
    for path in out.files.values():
        say(f"  wrote {path}", flush=True)
    for k, why in out.skipped.items():
        say(f"  skipped {k}: {why}", flush=True)
    say(f"browse: optuna-dashboard {safe_url(spec.storage_url)}", flush=True)
    if failed is not None:
        b = budget(study)
        if b.remaining(total) > 0 or b.running or b.waiting:
            raise failed
        # a worker died (killed while idle, say) but every trial is done: nothing to rerun
        say(f"note: {failed}; every trial of the study is finished", flush=True)
    return summary


def _run_processes(spec: SweepSpec, workers: int, threads: int | None) -> None:
    """Start ``workers`` worker processes and wait for them.

    They are forked from a multiprocessing fork server that imported torch and Lightning once
    (a clean, single-threaded process), so N workers do not each spend seconds importing.
    """
    import multiprocessing as mp

    launch = spec.dir / ".workers" / str(os.getpid())
    shutil.rmtree(launch, ignore_errors=True)
    launch.mkdir(parents=True)
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["ranklab.sweep.worker"])
    procs = [
        ctx.Process(
            target=_worker_process,
            args=(spec.to_yaml(), str(launch), workers, i, threads),
            name=f"ranklab-sweep-worker-{i}",
        )
        for i in range(workers)
    ]
    for p in procs:
        p.start()

    received: list[int] = []

    def forward(signum: int, frame: object) -> None:
        received.append(signum)
        for p in procs:
            if p.is_alive():
                p.terminate()  # SIGTERM: the worker requeues its trial and exits

    old = signal.signal(signal.SIGTERM, forward)
    try:
        try:
            for p in procs:
                p.join()
        except KeyboardInterrupt:  # Ctrl-C reached the workers too: they requeue and exit
            for p in procs:
                p.join()
            raise
    finally:
        signal.signal(signal.SIGTERM, old)
        shutil.rmtree(launch, ignore_errors=True)
    if received:  # the workers stopped because this process was told to
        raise StopRequested(128 + received[0])
    bad = [f"{p.name} (exit code {p.exitcode})" for p in procs if p.exitcode != 0]
    if bad:
        raise WorkerFailed(f"{', '.join(bad)} failed: see its output above")


def _worker_process(
    spec_yaml: str, launch: str, workers: int, index: int, threads: int | None
) -> None:
    """Body of a local worker process: wait for the others, then take trials."""
    from omegaconf import OmegaConf

    from ranklab.sweep.spec import spec_from_conf
    from ranklab.sweep.worker import run_worker

    signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
    spec = spec_from_conf(OmegaConf.create(spec_yaml))

    def ready() -> None:  # start together: mark ready, wait (up to 120 s) for the others
        Path(launch, f"ready-{index}").touch()
        deadline = time.monotonic() + 120
        while len(list(Path(launch).glob("ready-*"))) < workers:
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)

    try:
        run_worker(spec, threads=threads, ready=ready)
    except KeyboardInterrupt as e:
        sys.exit(getattr(e, "code", 130))
    except RanklabError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def _sigterm_to_interrupt(signum: int, frame: object) -> None:
    # (a run inside a trial stops after its batch and saves instead: ranklab.callbacks.Resumable)
    raise StopRequested(128 + signum)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="ranklab-sweep",
        description="Optuna sweep over ranklab experiments: "
        "ranklab-sweep sweep=<conf/sweep name or path> [key=value ...] [--workers N]",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        help="sweep=<name> (required), then sweep keys (trials=50, storage.url=..., "
        "params.task.lr='interval(1e-4,1e-2)') and fixed training overrides",
    )
    parser.add_argument("--workers", type=int, default=1, help="local worker processes")
    parser.add_argument(
        "--report-only", action="store_true", help="write the outputs from the study; no trials"
    )
    args = parser.parse_intermixed_args(argv)
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")

    name = None
    rest = []
    for o in args.overrides:
        if o.startswith("sweep="):
            name = o.split("=", 1)[1]
        else:
            rest.append(o)
    if not name:
        parser.error("missing sweep=<name> (a file in conf/sweep/ or a path to a YAML file)")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    old_handler = signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
    try:
        spec = load_spec(name, rest)
        if args.report_only:
            _report_only(spec)
        else:
            run_sweep(spec, workers=args.workers)
    except RanklabError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OperationalError as e:  # the database server is down, unreachable, or refuses us
        from ranklab.sweep.study import safe_url

        url = spec.storage_url  # set: load_spec connects to nothing
        why = " ".join(str(e.orig or e).split())[:300]
        print(
            f"error: config key 'storage.url': cannot use {safe_url(url)}: {why}",
            file=sys.stderr,
        )
        sys.exit(2)
    except WorkerFailed as e:
        print(f"error: {e}; rerun the same command to continue the study", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as e:
        print("interrupted: rerun the same command to continue the study", file=sys.stderr)
        sys.exit(getattr(e, "code", 130))
    finally:
        signal.signal(signal.SIGTERM, old_handler)


def _report_only(spec: SweepSpec) -> None:
    import optuna

    from ranklab.sweep.outputs import write_outputs
    from ranklab.sweep.study import backend, base_config, check_matches, safe_url, sqlite_path

    missing = RanklabError(f"no study '{spec.study_name}' in {safe_url(spec.storage_url)}")
    url = spec.storage_url
    if backend(url) == "sqlite" and not Path(sqlite_path(url)).is_file():
        raise missing
    try:
        study = optuna.load_study(study_name=spec.study_name, storage=spec.storage_url)
    except KeyError:
        raise missing from None
    # the outputs name the metric, rank by the direction and write the best config from the
    # base config: each must be the study's own (give the sweep's own overrides)
    check_matches(study, spec, *base_config(spec), "give the overrides the sweep ran with")
    out = write_outputs(spec, study)
    print(", ".join(f"{n} {s}" for s, n in sorted(out.counts.items())))
    for v in out.files.values():
        print(f"wrote {v}")
