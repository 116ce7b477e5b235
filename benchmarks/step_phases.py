"""Where one training step spends its time: the bare loop, the Lightning floor and ranklab.

    python benchmarks/step_phases.py --data-dir ../shared/data --model lr

The counterpart of ``eval_phases.py`` for training. Three sides train the same nn.Module on
the same batches, alternately, ``--repeats`` times: the bare loop of ``throughput.bare_train``,
``throughput.LightningFloor`` (the least LightningModule that trains it, in ranklab's Trainer
and data module) and ranklab's task as the benchmark runs it. Each Lightning step is cut by
callback hooks; the bare step by clock reads between its lines:

- ``forward + loss``: from ``on_train_batch_start`` to ``on_before_zero_grad`` (Lightning's
  dispatch through the optimiser wrapper and closure, then ``training_step``); bare: the
  forward pass and loss;
- ``zero_grad``, ``backward``: the same work on every side;
- ``closure end``: from ``on_after_backward`` to ``on_before_optimizer_step`` (Lightning only);
- ``clip + optimiser``: gradient clipping (where the config asks for it) and Adam's update, to
  ``on_train_batch_end``;
- ``between steps``: from ``on_train_batch_end`` to the next ``on_train_batch_start`` (the next
  batch's fetch and the loop's bookkeeping); bare: slicing the next batch.

Medians over the steps of epochs 2..N, then over repeats, in milliseconds; the mean step too
(a cost paid on a few steps only, such as a periodic ``self.log``, moves the mean, not the
median). ranklab's own ``on_train_batch_end`` runs after the callbacks', so it counts in
``between steps``. By default one torch thread and each thread's CPU time
(``time.thread_time``), which a busy neighbour on a shared machine does not lengthen;
``--threads N`` (N > 1) times wall time instead.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from ranklab.train import build

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import bare_train, model_cli, model_config, penalties, timed_fit

PHASES = ["forward + loss", "zero_grad", "backward", "closure end", "clip + optimiser"]
BETWEEN = "between steps"
clock = time.thread_time


class StepMarks(L.Callback):
    """Clock reads at the hooks that bound each phase of a training step, per epoch."""

    def __init__(self) -> None:
        self.epochs: list[list[dict[str, float]]] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epochs.append([])

    def _mark(self, key: str) -> None:
        self.epochs[-1][-1][key] = clock()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.epochs[-1].append({"start": clock()})

    def on_before_zero_grad(self, trainer, pl_module, optimizer) -> None:
        self._mark("forward + loss")

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self._mark("zero_grad")

    def on_after_backward(self, trainer, pl_module) -> None:
        self._mark("backward")

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self._mark("closure end")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._mark("clip + optimiser")

    def steps(self) -> list[dict[str, float]]:
        """Each step of epochs 2..N as phase -> seconds (the last step of an epoch has no
        ``between steps``: the epoch's end is not a step's cost)."""
        out = []
        for epoch in self.epochs[1:]:
            for i, marks in enumerate(epoch):
                prev, step = marks["start"], {}
                for phase in PHASES:
                    step[phase], prev = marks[phase] - prev, marks[phase]
                if i + 1 < len(epoch):
                    step[BETWEEN] = epoch[i + 1]["start"] - prev
                out.append(step)
        return out


def lightning_steps(cfg, epochs: int, floor: bool) -> list[dict[str, float]]:
    """Per-step phases of ranklab's fit (``floor``: the Lightning floor's), timed as
    ``throughput.framework_train`` runs it (no validation, no lr schedule)."""
    marks = StepMarks()
    timed_fit(cfg, epochs, marks, floor)
    return marks.steps()


class BareMarks:
    """``throughput.bare_train``'s ``mark``: each phase's clock time, per step."""

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []

    def __call__(self, phase: str) -> None:
        now = clock()
        if phase == "start":
            self.steps.append({})
        else:
            self.steps[-1][phase] = now - self.last
        self.last = now


def bare_steps(cfg, epochs: int) -> list[dict[str, float]]:
    """Per-step phases of ``throughput.bare_train``'s loop over epochs 2..N."""
    L.seed_everything(cfg.seed, verbose=False)
    dm, model, task = build(cfg)
    split = dm.split("train")
    torch.use_deterministic_algorithms(bool(cfg.trainer.deterministic))  # as the Trainers do
    marks = BareMarks()
    terms = penalties(cfg, model, task.emb_params)
    clip = cfg.trainer.get("gradient_clip_val")
    bare_train(
        model, split, dm.batch_size, epochs, task.optimizer_factory, terms, cfg.seed, clip, marks
    )
    per_epoch = len(marks.steps) // epochs
    return [{"closure end": 0.0, **s} for s in marks.steps[per_epoch:]]


def phases(cfg, epochs: int, repeats: int) -> dict[str, dict[str, Any]]:
    """side -> phase -> median milliseconds, plus ``step`` (the median step's total) and
    ``mean step`` (the mean: what a cost paid on a few steps, e.g. a periodic ``self.log``,
    adds). One torch thread: each thread's CPU time; more: wall time."""
    global clock
    clock = time.thread_time if torch.get_num_threads() == 1 else time.perf_counter
    sides = {
        "bare": lambda: bare_steps(cfg, epochs),
        "Lightning floor": lambda: lightning_steps(cfg, epochs, floor=True),
        "ranklab": lambda: lightning_steps(cfg, epochs, floor=False),
    }
    runs: dict[str, list[list[dict[str, float]]]] = {k: [] for k in sides}
    for _ in range(repeats):
        for side, run in sides.items():
            runs[side].append(run())
    med = statistics.median
    out: dict[str, dict[str, Any]] = {}
    for side, reps in runs.items():
        res = {
            p: med(med(s[p] for s in steps if p in s) for steps in reps) * 1e3
            for p in [*PHASES, BETWEEN]
        }
        res["step"] = med(med(sum(s.values()) for s in steps if BETWEEN in s) for steps in reps)
        res["step"] *= 1e3
        res["mean step"] = med(statistics.mean(sum(s.values()) for s in steps) for steps in reps)
        res["mean step"] *= 1e3
        res["steps"] = len(reps[0])
        out[side] = res
    return out


def main(argv: list[str] | None = None) -> int:
    ap = model_cli(
        __doc__,
        repeats=5,
        threads=1,
        threads_help="torch threads (>1: wall time; 0: torch default)",
    )
    ap.add_argument("--epochs", type=int, default=3, help="epochs per run (the first warms up)")
    args = ap.parse_args(argv)
    cfg, desc = model_config(args)
    res = phases(cfg, args.epochs, args.repeats)
    kind = "CPU time" if torch.get_num_threads() == 1 else "wall time"
    print(
        f"{args.model} on {desc}: batch {cfg.data.batch_size}, {torch.get_num_threads()} "
        f"thread(s), {kind}; medians over steps of epochs 2..{args.epochs}, "
        f"then over {args.repeats} repeats (ms)"
    )
    sides = list(res)
    print(f"  {'phase':18s}" + "".join(f"{s:>17s}" for s in sides))
    for p in [*PHASES, BETWEEN, "step", "mean step"]:
        print(f"  {p:18s}" + "".join(f"{res[s][p]:17.3f}" for s in sides))
    bare = res["bare"]["step"]
    print(f"  {'bare / side':18s}" + "".join(f"{bare / res[s]['step']:17.2f}" for s in sides))
    return 0


if __name__ == "__main__":
    sys.exit(main())
