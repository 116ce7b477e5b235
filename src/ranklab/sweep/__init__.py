"""Hyper-parameter sweeps: Optuna drives ``train(cfg)``; a trial's score is read from its
``metrics.json``, nothing more.

``conf/sweep/<name>.yaml`` names the base experiment, the search space (Hydra's sweep
vocabulary over any config key), the metric and direction, the total number of trials, the
sampler, the pruner and the storage. ``ranklab-sweep sweep=<name> [overrides] [--workers N]``
runs it; the same command on another machine, against the same database, adds workers.

Modules: ``spec`` (config, overrides, checks), ``space`` (sweep expressions -> Optuna),
``study`` (storage, lock, samplers, pruners, trial budget), ``worker`` (the trial loop and the
pruning callback), ``outputs`` (tables, best config, plots), ``cli`` (the command).
"""

from ranklab.sweep.cli import main, run_sweep
from ranklab.sweep.spec import SweepSpec, check_spec, load_spec

__all__ = ["SweepSpec", "check_spec", "load_spec", "main", "run_sweep"]
