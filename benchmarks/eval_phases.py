"""Where a ``Trainer.validate`` call spends its time, beside a bare evaluation of the same split.

    python benchmarks/eval_phases.py --data-dir ../shared/data --model lr

Phases are cut by callback hooks: Lightning's set-up before ``on_validation_start``, the loop's
start, the batches (forward and metric updates), the epoch end (the metrics' compute and
``self.log`` of each), and the teardown after ``on_validation_end``. The bare side is
``throughput.bare_eval`` (a no-grad loop over the same slices and the same metrics with plain
functions). The model is as built (untrained): its predictions, and so the AUC's sorts, differ
from a trained model's in ``throughput.py``. Between them, the whole call of
``throughput.LightningFloor`` (the least
LightningModule that computes the bare side's figures and logs them with ``self.log``) in the
same Trainer over the same data module: what Lightning itself costs. Medians over
``--repeats`` calls after two warm-ups, in milliseconds. On the smallest models the fixed
phases are what separates the framework from the bare loop.
"""

from __future__ import annotations

import itertools
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch

from ranklab.train import build

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import bare_eval, eval_trainer, floor_of, model_cli, model_config

PHASES = ["set-up", "loop start", "batches", "epoch end", "teardown"]


class Marks(L.Callback):
    """perf_counter at the hooks that bound each phase of a validation call."""

    def __init__(self) -> None:
        self.t: dict[str, float] = {}

    def on_validation_start(self, trainer, pl_module) -> None:
        self.t["start"] = time.perf_counter()

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dl_idx=0) -> None:
        self.t.setdefault("first_batch", time.perf_counter())

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        # callbacks' hook runs before the module's, which computes and logs the metrics
        self.t["batches_done"] = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        self.t["end"] = time.perf_counter()


def phases(cfg, repeats: int) -> dict[str, float]:
    """Median milliseconds of each phase of ``Trainer.validate``, its total, the Lightning
    floor's call and the bare evaluation of the same split, for the composed config ``cfg``."""
    dm, model, task = build(cfg)
    marks = Marks()
    trainer = eval_trainer([marks])
    floor = floor_of(cfg, model, task)
    # a Trainer of its own: one Trainer's logged keys must keep their options across calls
    floor_trainer = eval_trainer([Marks()])
    rows, floor_ms = [], []
    for _ in range(repeats + 2):  # two warm-ups; the floor's calls alternate with ranklab's
        t0 = time.perf_counter()
        floor_trainer.validate(floor, datamodule=dm, verbose=False)
        floor_ms.append((time.perf_counter() - t0) * 1e3)
        marks.t.clear()
        t0 = time.perf_counter()
        trainer.validate(task, datamodule=dm, verbose=False)
        t1 = time.perf_counter()
        t = marks.t
        points = [t0, t["start"], t["first_batch"], t["batches_done"], t["end"], t1]
        rows.append([(b - a) * 1e3 for a, b in itertools.pairwise(points)])
    rows = rows[2:]
    out = {name: statistics.median(r[i] for r in rows) for i, name in enumerate(PHASES)}
    out["ranklab"] = statistics.median(sum(r) for r in rows)
    out["floor"] = statistics.median(floor_ms[2:])
    val = dm.split("val")
    out["bare"] = len(val) / bare_eval(model, val, dm.eval_batch_size, repeats=repeats) * 1e3
    out["rows"] = len(val)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = model_cli(__doc__, repeats=10, threads=0, threads_help="torch threads (0: torch default)")
    args = ap.parse_args(argv)
    cfg, desc = model_config(args)
    res = phases(cfg, args.repeats)
    print(
        f"{args.model} on {desc}: {res['rows']:,} validation rows, "
        f"{torch.get_num_threads()} threads, medians of {args.repeats} calls (ms)"
    )
    for name in PHASES:
        print(f"  {name:12s} {res[name]:8.2f}")
    print(f"  {'ranklab':12s} {res['ranklab']:8.2f}")
    print(f"  {'floor':12s} {res['floor']:8.2f}   (Lightning's least: the same figures, self.log)")
    print(f"  {'bare':12s} {res['bare']:8.2f}   ratio {res['bare'] / res['ranklab']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
