"""A worker killed in the middle of a trial: rerunning the command completes the study."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from sweep_helpers import cli_env, sweep_cmd, sweep_config

from ranklab.sweep import load_spec, main
from ranklab.sweep.study import superseded


def start_long_sweep(
    tmp_path: Path, trials: int, output: bool = True, **storage: int
) -> tuple[Path, Any, Path, subprocess.Popen]:
    """A sweep of trials of 30 epochs without early stopping (long enough to be stopped in
    the middle), started as a process and returned once trial 0 has its first checkpoint:
    (config path, spec, trial 0's run folder, the process; its output piped if ``output``)."""
    path = sweep_config(
        tmp_path,
        {"optimizer.lr": "tag(log, interval(1e-3, 1e-2))"},
        trials=trials,
        fixed=["trainer.max_epochs=30", "callbacks.early_stopping.patience=100"],
        **({"storage": storage} if storage else {}),
    )
    spec = load_spec(str(path))
    first_run = spec.dir / "trials" / "0000"
    pipe = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    proc = subprocess.Popen(
        sweep_cmd(f"sweep={path}"), cwd=tmp_path, env=cli_env(), **(pipe if output else quiet)
    )
    deadline = time.monotonic() + 120
    while not (first_run / "checkpoints" / "last.ckpt").exists():  # trial 0 is in epoch 1
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"trial 0 wrote no checkpoint (exit {proc.poll()})")
        time.sleep(0.02)
    return path, spec, first_run, proc


def test_killed_worker_trial_is_failed_retried_and_the_study_completes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, spec, first_run, proc = start_long_sweep(tmp_path, trials=2, output=False)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (first_run / "metrics.json").exists()  # killed mid-trial
    storage = spec.storage_url
    killed = optuna.load_study(study_name=spec.study_name, storage=storage).trials
    assert [t.state for t in killed] == [TrialState.RUNNING]  # nothing else can fix it

    main([f"sweep={path}"])  # the same command again (in this process: torch is loaded)
    printed = capsys.readouterr().out
    trials = optuna.load_study(study_name=spec.study_name, storage=storage).trials
    gone = superseded(trials)
    assert gone == {0}
    assert trials[0].state == TrialState.FAIL  # no longer "running"
    counted = [t for t in trials if t.number not in gone]
    assert len(counted) == 2 and all(t.state == TrialState.COMPLETE for t in counted)
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retries) == 1  # retried once, with the same parameters
    assert retries[0].params == trials[0].params
    assert "retry of 0" in printed
    retried_run = Path(retries[0].user_attrs["run_dir"])
    finished = json.loads((retried_run / "metrics.json").read_text())
    assert finished["val"]["auc"] == retries[0].value
    # the retry continued the killed trial from its checkpoint instead of starting over
    assert finished["resumed_from"] == str(first_run / "checkpoints" / "last.ckpt")
    assert "0 (retried)" not in (spec.dir / "trials.csv").read_text()
    assert "fail (retried)" in (spec.dir / "trials.csv").read_text()


def test_sigterm_mid_trial_checkpoints_requeues_and_exits_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGTERM (a scheduler's preemption) to a sweep in the middle of a trial: the run saves
    its checkpoint at the signal, the trial is failed as interrupted and queued again at once
    (no heartbeat wait), the process exits 128 + 15, and the rerun continues the trial from
    that checkpoint."""
    # (a stale-heartbeat retry could not explain the result: grace_period is 10 minutes)
    path, spec, first_run, proc = start_long_sweep(tmp_path, trials=1, grace_period=600)
    try:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "[trial 0] interrupted: queued again" in out
    status = json.loads((first_run / "status.json").read_text())
    assert status["status"] == "interrupted"
    assert status["checkpoint"] == str(first_run / "checkpoints" / "last.ckpt")
    assert json.loads((first_run / "trial.json").read_text())["state"] == "interrupted"
    storage = spec.storage_url
    trials = optuna.load_study(study_name=spec.study_name, storage=storage).trials
    assert trials[0].state == TrialState.FAIL
    assert trials[0].user_attrs["error"] == "interrupted"
    assert [t.state for t in trials[1:]] == [TrialState.WAITING]  # queued with its params

    main([f"sweep={path}"])  # picked up at once, though grace_period is 10 minutes
    trials = optuna.load_study(study_name=spec.study_name, storage=storage).trials
    assert superseded(trials) == {0}
    assert trials[1].state == TrialState.COMPLETE and trials[1].params == trials[0].params
    finished = json.loads((Path(trials[1].user_attrs["run_dir"]) / "metrics.json").read_text())
    assert finished["resumed_from"] == str(first_run / "checkpoints" / "last.ckpt")
    assert "retry of 0" in capsys.readouterr().out


KILL_AFTER_THE_RUN = """
import os, signal, sys
import ranklab.sweep.worker as worker
record = worker._finish
def killed(run_dir, rec, state, *args, **kwargs):
    if state == "complete":  # the run finished and wrote metrics.json: killed before the record
        os.kill(os.getpid(), signal.SIGKILL)
    return record(run_dir, rec, state, *args, **kwargs)
worker._finish = killed
from ranklab.sweep import main
main(sys.argv[1:])
"""


def test_a_trial_whose_run_finished_before_its_worker_was_lost_is_not_trained_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    path = sweep_config(tmp_path, {"optimizer.lr": "tag(log, interval(1e-3, 1e-2))"}, trials=1)
    spec = load_spec(str(path))
    proc = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_THE_RUN, f"sweep={path}"],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stdout[-2000:] + proc.stderr[-2000:]
    first_run = spec.dir / "trials" / "0000"
    finished = json.loads((first_run / "metrics.json").read_text())
    assert finished["status"] == "finished"

    main([f"sweep={path}"])  # the same command again
    assert "trial 0 had finished: its result is taken" in capsys.readouterr().out
    trials = optuna.load_study(study_name=spec.study_name, storage=spec.storage_url).trials
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == 0)
    assert retry.state == TrialState.COMPLETE and retry.value == finished["val"]["auc"]
    assert retry.user_attrs["run_dir"] == str(first_run)
    assert not (spec.dir / "trials" / f"{retry.number:04d}").exists()  # nothing trained
    assert json.loads((first_run / "trial.json").read_text())["retry_of"] == 0
