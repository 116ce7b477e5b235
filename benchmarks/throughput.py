"""Training and evaluation throughput of every model, beside bare PyTorch loops in the same run.

    make bench                                  # real Frappe_x1 from ../shared/data if present
    python benchmarks/throughput.py --models deepfm dnn --repeats 5 --epochs 3

For each model the framework (Lightning Trainer + RankingTask + RankDataModule, exactly as
``ranklab-train`` runs it, minus the progress bar and checkpoint files), a bare loop over the
same nn.Module, and the *Lightning floor* (the same Trainer, data module and nn.Module under the
least LightningModule that trains and validates it: the bare loop's loss and figures, logged
with ``self.log``) are timed alternately, ``--repeats`` times, and medians are reported. The
floor splits the framework's cost into Lightning's own (floor / bare) and ranklab's (ranklab /
floor). DeepFM is also compared with an independent bare implementation (one embedding table,
FM, MLP, Adam: what one would write by hand), which is the reference for the framework-overhead
ratio. Machines here are noisy: read the ratios, not the absolute numbers; ``--cpu-time`` times
CPU time on one thread instead of wall time, which a busy neighbour does not inflate.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table
from torch import nn

from ranklab.config import compose
from ranklab.data import RankDataModule, TensorSplit
from ranklab.data.batch import Batch
from ranklab.metrics import auc, grouped_auc, logloss
from ranklab.tasks.base import OptimizerFactory
from ranklab.train import build

ROOT = Path(__file__).resolve().parents[1]
# the clock every timing reads: wall time, or the process's CPU time (--cpu-time)
CLOCK = time.perf_counter
CTR_MODELS = [
    "lr",
    "fm",
    "dnn",
    "wide_deep",
    "deepfm",
    "dcn",
    "dcnv2",
    "xdeepfm",
    "autoint",
    "fibinet",
    "masknet",
    "dlrm",
    "finalmlp",
]
SEQ_MODELS = ["deepfm", "din"]  # DIN beside DeepFM on the same rows (DeepFM ignores the history)
# Frappe_x1 field cardinalities (distinct training values), for the synthetic stand-in
FRAPPE_VOCABS = [957, 4082, 7, 7, 2, 3, 2, 10, 80, 233]


class EpochTimer(L.Callback):
    """Wall time of each training epoch (validation is disabled in the benchmark). On a GPU it
    waits for the queued kernels at both ends, as the bare loop does, so an epoch is timed to
    its last optimiser step."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.samples: list[int] = []

    @staticmethod
    def _now(pl_module) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return CLOCK()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._t0, self._n = self._now(pl_module), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._n += len(batch)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.times.append(self._now(pl_module) - self._t0)
        self.samples.append(self._n)


def data_overrides(data_dir: Path) -> tuple[list[str], str]:
    if (data_dir / "frappe_x1" / "train.csv").is_file():
        return ["data=frappe_x1", f"paths.data_dir={data_dir}"], "Frappe_x1 (real)"
    vocab = ",".join(str(v) for v in FRAPPE_VOCABS)
    return (
        [
            f"data.source.vocab_sizes=[{vocab}]",
            "data.source.n_numeric=0",
            "data.source.n_train=202027",
            "data.source.n_val=57722",
            "data.source.n_test=28860",
            "data.source.triple_max_vocab=10",
        ],
        "synthetic, Frappe-shaped (no real data found)",
    )


def bench_config(data_ov: list[str], model: str, overrides: list[str]) -> DictConfig:
    """The config a benchmark times: the data (``data_overrides``), the model, the
    repository's cache folder, and the command line's extra overrides."""
    cache = "paths.cache_dir=" + str(ROOT / "cache")
    return compose([*data_ov, f"model={model}", cache, *overrides])


def model_cli(doc: str, repeats: int, threads: int, threads_help: str) -> argparse.ArgumentParser:
    """The command line of a one-model script (``eval_phases.py``, ``step_phases.py``):
    ``--data-dir``, ``--model``, ``--repeats``, ``--threads``, ``--overrides``; see
    :func:`model_config`."""
    ap = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--model", default="lr")
    ap.add_argument("--repeats", type=int, default=repeats, help="alternating runs of each side")
    ap.add_argument("--threads", type=int, default=threads, help=threads_help)
    ap.add_argument("--overrides", nargs="*", default=[], help="extra Hydra overrides")
    return ap


def model_config(args: argparse.Namespace) -> tuple[DictConfig, str]:
    """For :func:`model_cli`'s arguments: sets the torch threads asked for (0: torch's
    default) and returns the config to time and its data's description."""
    if args.threads:
        torch.set_num_threads(args.threads)
    data_ov, desc = data_overrides(args.data_dir)
    return bench_config(data_ov, args.model, args.overrides), desc


def framework_train(cfg, epochs: int, floor: bool = False) -> float:
    """Samples/s of Trainer.fit over epochs 2..N (epoch 1 warms up); with ``floor``, of the
    same fit with the task replaced by :class:`LightningFloor` over the same model and data."""
    timer = EpochTimer()
    timed_fit(cfg, epochs, timer, floor)
    return statistics.median(n / t for n, t in zip(timer.samples[1:], timer.times[1:]))


def timed_fit(cfg, epochs: int, timer: L.Callback, floor: bool = False) -> L.LightningModule:
    """Fit ranklab's task (``floor``: :class:`LightningFloor` over the same model) for
    ``epochs`` on the CPU, as ``ranklab-train`` would but without logger, checkpoints, progress
    bar and validation, with ``timer`` as the only callback; returns the fitted module.

    Validation is off while timing, so the plateau lr schedule (which waits for a validation
    metric) is too; it acts once per epoch and costs nothing per batch.
    """
    cfg = cfg.copy()
    cfg.scheduler = {}
    L.seed_everything(cfg.seed, verbose=False)
    dm, model, task = build(cfg)
    module: L.LightningModule = floor_of(cfg, model, task) if floor else task
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        deterministic=cfg.trainer.deterministic,
        gradient_clip_val=cfg.trainer.get("gradient_clip_val"),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[timer],
    )
    trainer.fit(module, datamodule=dm)
    return module


def eval_trainer(callbacks: list[L.Callback] | None = None) -> L.Trainer:
    """The Trainer evaluation is timed with: CPU, no logger, progress bar or model summary."""
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )


def framework_eval(cfg, task: L.LightningModule, dm: RankDataModule, repeats: int = 2) -> float:
    """Samples/s of Trainer.validate (metrics included), median of repeats after a warm-up."""
    trainer = eval_trainer()
    n = len(dm.split("val"))
    rates = []
    for _ in range(repeats + 1):
        t0 = CLOCK()
        trainer.validate(task, datamodule=dm, verbose=False)
        rates.append(n / (CLOCK() - t0))
    return statistics.median(rates[1:])


def bare_loss(
    model: nn.Module, b: Batch, penalties: list[tuple[float, list[nn.Parameter]]]
) -> torch.Tensor:
    """The bare loops' loss of a batch: BCE of the logits (+ a model's ``*_loss`` terms, e.g.
    DIEN's auxiliary loss) + the L2 penalties the task adds, as (coefficient, parameters)."""
    out = model(b.features)
    loss = F.binary_cross_entropy_with_logits(logits_of(out), b.label)
    if isinstance(out, dict):
        loss = loss + sum(v for k, v in out.items() if k.endswith("_loss"))
    for coef, params in penalties:
        if coef:
            loss = loss + coef / 2 * sum(p.pow(2).sum() for p in params)
    return loss


def figures(
    probs: torch.Tensor, y: torch.Tensor, group: torch.Tensor | None, grouped: bool
) -> dict[str, float]:
    """What the framework's validation reports, with plain functions over all predictions
    (N,): AUC, log loss, NE, calibration and (where the data has groups and the task computes
    them) grouped AUC."""
    loss = logloss(probs, y)
    rate = float(y.mean())
    out = {
        "auc": auc(probs, y),
        "logloss": loss,
        "ne": loss / -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate)),
        "calibration": float(probs.sum()) / max(float(y.sum()), 1e-12),
    }
    if grouped and group is not None:
        out["gauc"] = grouped_auc(probs, y, group)
    return out


class LightningFloor(L.LightningModule):
    """The least a LightningModule does to train and validate ``model`` as the bare loops do:
    a training step of :func:`bare_loss`, the run's optimiser, and a validation that keeps each
    batch's probabilities and logs :func:`figures` with ``self.log``. Timed in the same Trainer
    over the same data module as ranklab's task, it is what Lightning itself costs."""

    def __init__(
        self,
        model: nn.Module,
        penalties: list[tuple[float, list[nn.Parameter]]],
        optimizer: OptimizerFactory,
        grouped: bool = True,
    ) -> None:
        super().__init__()
        self.model, self.penalties, self.grouped = model, penalties, grouped
        self.optimizer = optimizer
        self.kept: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        return bare_loss(self.model, batch, self.penalties)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer(self.model.parameters())

    def transfer_batch_to_device(self, batch: Batch, device: torch.device, idx: int) -> Batch:
        # Lightning's default would rebuild the dataclass; any Lightning user writes this
        return batch if batch.device == device else batch.to(device)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        probs = torch.sigmoid(logits_of(self.model(batch.features)))
        self.kept.append((probs, batch.label, batch.group))

    def on_validation_epoch_end(self) -> None:
        probs, y, groups = zip(*self.kept)
        group = torch.cat(groups) if groups[0] is not None else None
        for k, v in figures(torch.cat(probs), torch.cat(y), group, self.grouped).items():
            self.log(f"val/{k}", v)
        self.kept.clear()


def floor_of(cfg, model: nn.Module, task) -> LightningFloor:
    """The Lightning floor of ranklab's ``task`` over its ``model``: the same penalties,
    optimiser and grouped metrics."""
    grouped = bool(cfg.task.get("grouped_metrics", True))
    terms = penalties(cfg, model, task.emb_params)
    return LightningFloor(model, terms, task.optimizer_factory, grouped)


def bare_train(
    model: nn.Module,
    split: TensorSplit,
    batch_size: int,
    epochs: int,
    optimizer: OptimizerFactory,
    penalties: list[tuple[float, list[nn.Parameter]]],
    seed: int,
    clip: float | None = None,
    mark: Callable[[str], None] | None = None,
) -> float:
    """A plain loop: permutation, slice, forward, :func:`bare_loss`, backward, [gradient
    clipping, as the experiment's recipe asks,] the run's optimiser (``params -> optimizer``).

    ``mark(phase)``, if given, is called as each phase of a step ends (``step_phases.py``)."""
    torch.manual_seed(seed)
    opt = optimizer(model.parameters())
    model.train()
    n = len(split)
    rates = []
    for epoch in range(epochs):
        t0 = CLOCK()
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
        for i in range(0, n, batch_size):
            if mark:
                mark("start")
            b = split.take(perm[i : i + batch_size])
            if mark:
                mark("between steps")
            opt.zero_grad(set_to_none=True)
            if mark:
                mark("zero_grad")
            loss = bare_loss(model, b, penalties)
            if mark:
                mark("forward + loss")
            loss.backward()
            if mark:
                mark("backward")
            if clip:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            if mark:
                mark("clip + optimiser")
        rates.append(n / (CLOCK() - t0))
    return statistics.median(rates[1:])


@torch.no_grad()
def bare_eval(
    model: nn.Module, split: TensorSplit, batch_size: int, repeats: int = 2, grouped: bool = True
) -> float:
    """Inference over slices, then :func:`figures` of the concatenated predictions."""
    model.eval()
    n = len(split)
    rates = []
    for _ in range(repeats + 1):
        t0 = CLOCK()
        probs = torch.cat(
            [
                torch.sigmoid(logits_of(model(split.take(slice(i, i + batch_size)).features)))
                for i in range(0, n, batch_size)
            ]
        )
        figures(probs, split.label, split.group, grouped)
        rates.append(n / (CLOCK() - t0))
    return statistics.median(rates[1:])


def logits_of(out: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
    return out["logits"] if isinstance(out, dict) else out


class BareDeepFM(nn.Module):
    """DeepFM written by hand, independent of ranklab.nn: the reference for the overhead ratio.

    ids (B, F) with per-field offsets into one table; logit = bias + sum w + FM + MLP.
    """

    def __init__(
        self, vocab_sizes: list[int], dim: int, hidden: list[int], dropout: float, batch_norm: bool
    ):
        super().__init__()
        offsets = torch.tensor([0, *vocab_sizes[:-1]]).cumsum(0)
        self.register_buffer("offsets", offsets)
        self.emb = nn.Embedding(sum(vocab_sizes), dim)
        self.w = nn.Embedding(sum(vocab_sizes), 1)
        self.bias = nn.Parameter(torch.zeros(1))
        nn.init.normal_(self.emb.weight, std=1e-4)
        nn.init.normal_(self.w.weight, std=1e-4)
        layers, d = [], len(vocab_sizes) * dim
        for h in hidden:
            layers += [nn.Linear(d, h)] + ([nn.BatchNorm1d(h)] if batch_norm else []) + [nn.ReLU()]
            layers += [nn.Dropout(dropout)] if dropout else []
            d = h
        self.mlp = nn.Sequential(*layers, nn.Linear(d, 1))
        self.fields: list[str] = []

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        ids = torch.stack([features[f] for f in self.fields], 1) + self.offsets  # (B, F)
        e = self.emb(ids)  # (B, F, D)
        fm = 0.5 * (e.sum(1).pow(2) - e.pow(2).sum(1)).sum(1)
        return self.bias + self.w(ids).sum((1, 2)) + fm + self.mlp(e.flatten(1)).squeeze(-1)


def seq_overrides(data_dir: Path) -> tuple[list[str], str]:
    if (data_dir / "ml-100k" / "ml-100k.inter").is_file():
        return ["data=ml100k_seq", f"paths.data_dir={data_dir}"], "ml100k_seq (real)"
    return ["data=synthetic_seq"], "synthetic_seq (no real data found)"


def penalties(
    cfg, model: nn.Module, emb: list[nn.Parameter]
) -> list[tuple[float, list[nn.Parameter]]]:
    """The L2 penalties the task adds, as (coefficient, parameters): the embeddings' (``emb``)
    and the other weights' (the tuned LR and FM set ``net_regularizer``: the bare loop left it
    out, and did less work a step than the framework)."""
    net = [p for p in model.parameters() if all(p is not e for e in emb)]
    return [(cfg.task.embedding_regularizer, emb), (cfg.task.net_regularizer, net)]


def bench_model(cfg, epochs: int, repeats: int, floor: bool = True) -> dict:
    """Alternate framework, Lightning-floor and bare runs ``repeats`` times; medians and raw
    figures."""
    fw_tr, bare_tr, fw_ev, bare_ev, ind_tr, ind_ev = [], [], [], [], [], []
    fl_tr: list[float] = []
    fl_ev: list[float] = []
    clip = cfg.trainer.get("gradient_clip_val")
    grouped = bool(cfg.task.get("grouped_metrics", True))
    for r in range(repeats):
        fw_tr.append(framework_train(cfg, epochs))
        if floor:
            fl_tr.append(framework_train(cfg, epochs, floor=True))
        dm, model, task = build(cfg)
        # the Trainers above set it for the process; said here, it holds for the first too
        torch.use_deterministic_algorithms(bool(cfg.trainer.deterministic))
        val_split = dm.split("val")

        def bare(
            m: nn.Module, emb: list[nn.Parameter], dm=dm, task=task, seed=cfg.seed + r
        ) -> float:
            return bare_train(
                m,
                dm.split("train"),
                dm.batch_size,
                epochs,
                task.optimizer_factory,
                penalties(cfg, m, emb),
                seed,
                clip,
            )

        bare_tr.append(bare(model, task.emb_params))
        fw_ev.append(framework_eval(cfg, task, dm))
        if floor:
            fl_ev.append(framework_eval(cfg, floor_of(cfg, model, task), dm))
        bare_ev.append(bare_eval(model, val_split, dm.eval_batch_size, grouped=grouped))
        schema = dm.schema
        if cfg.model._target_.endswith(".DeepFM") and not schema.numeric and not schema.sequences:
            m = cfg.model  # the hand-written reference covers categorical fields only
            ref = BareDeepFM(
                [f.vocab_size for f in schema.categorical],
                m.embedding_dim,
                list(m.hidden_units),
                m.dropout,
                m.batch_norm,
            )
            ref.fields = [f.name for f in schema.categorical]
            ind_tr.append(bare(ref, [ref.emb.weight, ref.w.weight]))
            ind_ev.append(bare_eval(ref, val_split, dm.eval_batch_size, grouped=grouped))
    med = statistics.median
    res = {
        "framework_train": med(fw_tr),
        "bare_train_same_module": med(bare_tr),
        "framework_eval": med(fw_ev),
        "bare_eval_same_module": med(bare_ev),
        "raw": {
            "framework_train": fw_tr,
            "bare_train": bare_tr,
            "framework_eval": fw_ev,
            "bare_eval": bare_ev,
        },
    }
    if floor:
        res.update({"floor_train": med(fl_tr), "floor_eval": med(fl_ev)})
        res["raw"].update({"floor_train": fl_tr, "floor_eval": fl_ev})
    if ind_tr:
        res.update(
            {
                "bare_train_independent": med(ind_tr),
                "bare_eval_independent": med(ind_ev),
                "raw_independent": {"train": ind_tr, "eval": ind_ev},
            }
        )
    return res


def results_table(title: str, rows: list[tuple[str, dict]]) -> Table:
    """Per stage: ranklab's samples/s, [the Lightning floor's,] the bare loop's, ranklab / bare
    [and ranklab / floor: ranklab's own share of the cost]."""
    floor = any("floor_train" in r for _, r in rows)
    table = Table(title=title)
    table.add_column("model", justify="right")
    for stage in ("train", "eval"):
        table.add_column(f"{stage}: ranklab", justify="right")
        if floor:
            table.add_column("Lightning floor", justify="right")
        table.add_column("bare (same module)", justify="right")
        table.add_column("ranklab / bare", justify="right")
        if floor:
            table.add_column("ranklab / floor", justify="right")

    def cells(r: dict, stage: str, bare_key: str, hand_written: bool) -> list[str]:
        fw, bare = r[f"framework_{stage}"], r[bare_key]
        out = ["" if hand_written else f"{fw:,.0f}"]
        fl = r.get(f"floor_{stage}")
        if floor:
            out.append("" if hand_written or fl is None else f"{fl:,.0f}")
        out += [f"{bare:,.0f}", f"{fw / bare:.2f}"]
        if floor:
            out.append("" if hand_written or fl is None else f"{fw / fl:.2f}")
        return out

    for name, r in rows:
        table.add_row(
            name,
            *cells(r, "train", "bare_train_same_module", False),
            *cells(r, "eval", "bare_eval_same_module", False),
        )
        if "bare_train_independent" in r:
            table.add_row(
                f"{name} vs hand-written",
                *cells(r, "train", "bare_train_independent", True),
                *cells(r, "eval", "bare_eval_independent", True),
            )
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--models", nargs="+", default=CTR_MODELS, help="CTR suite models")
    ap.add_argument(
        "--seq-models", nargs="*", default=SEQ_MODELS, help="sequence suite models (none: skip)"
    )
    ap.add_argument(
        "--epochs", type=int, default=3, help="epochs per timing (the first is warm-up)"
    )
    ap.add_argument("--repeats", type=int, default=3, help="alternating framework/bare repeats")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench")
    ap.add_argument("--overrides", nargs="*", default=[], help="extra Hydra overrides")
    ap.add_argument(
        "--no-floor", action="store_true", help="skip the Lightning floor (a third of the time)"
    )
    ap.add_argument(
        "--cpu-time",
        action="store_true",
        help="time the process's CPU time, not wall time, on one torch thread (a busy "
        "neighbour then slows a run without lengthening its timings)",
    )
    args = ap.parse_args(argv)
    if args.cpu_time and args.threads > 1:
        ap.error("--cpu-time times one thread's work: give --threads 1 (or leave it out)")
    if args.cpu_time:
        args.threads = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    global CLOCK
    CLOCK = time.process_time if args.cpu_time else time.perf_counter
    console = Console()
    if not console.is_terminal:  # a log file: rich's 80 columns would truncate the table
        console = Console(width=170)
    suites = [("CTR", *data_overrides(args.data_dir), args.models)]
    if args.seq_models:
        suites.append(("sequences", *seq_overrides(args.data_dir), args.seq_models))
    console.print(
        f"[bold]ranklab bench[/] · torch threads {torch.get_num_threads()} · "
        f"{args.repeats} repeats, {args.epochs} epochs each (first is warm-up) · medians"
        + (" · CPU time" if args.cpu_time else "")
    )
    out: dict = {
        "threads": torch.get_num_threads(),
        "epochs": args.epochs,
        "repeats": args.repeats,
        "clock": "process CPU time" if args.cpu_time else "wall",
        "suites": {},
    }
    for suite, data_ov, data_desc, models in suites:
        rows = []
        for name in models:
            cfg = bench_config(data_ov, name, args.overrides)
            rows.append((name, bench_model(cfg, args.epochs, args.repeats, not args.no_floor)))
            console.print(f"  {suite} · {name}: done")
        console.print(
            results_table(
                f"{suite} · {data_desc} · samples/s (median) and ranklab / bare ratio", rows
            )
        )
        out["suites"][suite] = {"data": data_desc, "results": dict(rows)}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"throughput-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(out, indent=2))
    console.print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
