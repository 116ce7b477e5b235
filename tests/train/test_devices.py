"""Data parallelism and accelerators: sharded evaluation is exact; GPU runs skip without CUDA."""

from __future__ import annotations

import math
import os
from pathlib import Path

import lightning as L
import pytest
import torch
from tiny import TINY_DATA, model_family, model_names, write_markov_log

from ranklab.config import compose
from ranklab.train import build, train


def test_ddp_sharded_validation_equals_single_process(make_cfg) -> None:
    """Two CPU processes each evaluate half of the rows; torchmetrics gathers the state, so
    every metric equals the single-process value on the same weights."""
    cfg = make_cfg("model=deepfm", "model.hidden_units=[16]", "data.eval_batch_size=700")
    L.seed_everything(0)
    dm, _, task = build(cfg)
    common = dict(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    single = L.Trainer(devices=1, **common).validate(task, datamodule=dm, verbose=False)[0]
    dm2, _, task2 = build(cfg)
    task2.load_state_dict(task.state_dict())
    spawned = L.Trainer(devices=2, strategy="ddp_spawn", **common).validate(
        task2, datamodule=dm2, verbose=False
    )[0]
    for key in ("val/auc", "val/logloss", "val/gauc", "val/calibration"):
        assert spawned[key] == pytest.approx(single[key], abs=1e-6), key


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_run_keeps_data_on_the_device(make_cfg) -> None:
    m = train(make_cfg("trainer=gpu", "model=dcnv2", "model.hidden_units=[32]"))
    assert m["test"]["auc"] > 0.6 and m["train_samples_per_s"] > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_attention_training_reruns_to_the_same_digits(make_cfg, tmp_path) -> None:
    """trainer=gpu asks for determinism ("warn"): PyTorch warns that the memory-efficient
    attention backward is nondeterministic, yet at these lengths a rerun must give the same
    digits (seen on an H100 for BST here and SASRec on Beauty)."""
    common = [
        "trainer=gpu",
        "data=synthetic_seq",
        "data.source.n_train=6000",
        "data.source.n_val=2000",
        "data.source.n_test=2000",
        "model=bst",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        "print_summary=false",
    ]
    a, b = (train(make_cfg(*common, f"paths.output_dir={tmp_path}/{r}", tiny=False)) for r in "ab")
    assert a["test"] == b["test"]


def family_data(name: str, tmp_path: Path) -> list[str]:
    """Small data of the model's family (its class's ``family``), as a user would pick it."""
    fam = model_family(name)
    sizes = ["data.source.n_train=6000", "data.source.n_val=2000", "data.source.n_test=2000"]
    if fam == "sequence":
        return ["data=synthetic_seq", *sizes]
    if fam == "multitask":
        return ["data=synthetic_mtl", "data.source.vocab_sizes=[30,20,10,5,5]", *sizes]
    if fam == "retrieval":
        log = write_markov_log(tmp_path / "log.txt", n_users=600, n_items=60)
        return [
            "data=beauty_seq",
            "task=retrieval",
            f"data.source.events.path={log}",
            "data.source.n_eval_negatives=20",
        ]
    return TINY_DATA


def gpu_run(name: str, tmp_path: Path, *extra: str, trainer: str = "gpu") -> dict:
    """One ``train()`` of model config ``name`` on its family's small data, one epoch, with
    the GPU switches the README names (bf16-mixed), efficiency measured: every path a model's
    batch takes on the device (data resident or streamed, eval, latency) runs once."""
    cfg = compose(
        [
            f"paths.output_dir={tmp_path}/run",
            f"paths.cache_dir={tmp_path}/cache",
            f"trainer={trainer}",
            "trainer.precision=bf16-mixed",
            "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false",
            "print_summary=false",
            "logger=csv",
            f"model={name}",
            *family_data(name, tmp_path),
            *extra,
        ]
    )
    m = train(cfg)
    assert m["status"] == "finished", m["status"]
    values = [v for v in m["test"].values() if isinstance(v, float)]
    assert values and all(math.isfinite(v) for v in values), m["test"]
    assert m["efficiency"]["latency_ms_batch4096"]["rows"] == 4096
    return m


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(
    "name, extra",
    [
        *((m, ()) for m in model_names()),
        # out of core: blocks read from the cache, pinned and copied without blocking
        ("deepfm", ("data.memory_budget=1KB", "data.block_rows=3000")),
    ],
)
def test_every_model_config_trains_on_the_gpu_in_bf16(name: str, extra: tuple, tmp_path) -> None:
    m = gpu_run(name, tmp_path, *extra)
    assert m["environment"]["device"] == torch.cuda.get_device_name()
    assert m["efficiency"]["peak_gpu_allocated_mb"] > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_nan_loss_is_caught_at_its_step_without_a_sync_per_step(make_cfg, tmp_path) -> None:
    """On a GPU the loss is read at the step's end (BaseTask.guard): the run still stops at
    the step whose loss was NaN, and no checkpoint holds that step's update."""
    from faults import NaNAt

    from ranklab.errors import Diverged

    cfg = make_cfg(
        "trainer=gpu",
        "model=dnn",
        "model.hidden_units=[16]",
        "trainer.max_epochs=5",
        "callbacks.resume.every_n_steps=1",
    )
    with pytest.raises(Diverged, match=r"training loss is nan at epoch 1, step 15: "):
        train(cfg, callbacks=[NaNAt(epoch=1, batch=3)])
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 15
    assert all(
        torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point()
    )


def test_batch_loader_gives_each_row_to_one_rank_per_epoch() -> None:
    from ranklab.data import BatchLoader, TensorSplit

    split = TensorSplit({"x": torch.arange(103)}, {"label": torch.zeros(103)})
    for epoch in range(2):
        seen = []
        loaders = [
            BatchLoader(split, 8, shuffle=True, seed=5, rank=r, world_size=2) for r in (0, 1)
        ]
        for lo in loaders:
            lo.epoch = epoch
            seen.append(torch.cat([b.features["x"] for b in lo]))
        assert len(seen[0]) == len(seen[1]) == 51  # equal shares: the same number of steps
        assert not set(seen[0].tolist()) & set(seen[1].tolist())  # each row once


# No batch normalisation (Dice included) and no dropout: per-process batch statistics and
# dropout masks are the two things that differ between 2 processes of half the batch and 1
FAMILIES = {
    "ranking": ["model=deepfm", "model.hidden_units=[32]", "model.batch_norm=false"],
    "sequence": [
        "data=synthetic_seq",
        "data.source.n_users=3000",
        "data.source.n_items=200",
        "model=din",
        "model.hidden_units=[32]",
        "model.activation=relu",
    ],
    "multitask": ["data=synthetic_mtl", "data.source.vocab_sizes=[30,20,10,5,5]", "model=mmoe"],
    # the data read from the cache's files in blocks (data/outofcore.py), by each rank
    "ranking-out-of-core": [
        "model=deepfm",
        "model.hidden_units=[32]",
        "model.batch_norm=false",
        "data.memory_budget=1KB",
        "data.block_rows=3000",
    ],
    "retrieval": [
        "data=beauty_seq",
        "task=retrieval",
        "model=sasrec",
        "model.embedding_dim=16",
        "model.dropout=0.0",
    ],
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_two_processes_train_like_one(family: str, tmp_path) -> None:
    """trainer=ddp with 2 CPU processes (gloo) against 1 on the same data and seed: each rank
    takes half of every global batch (the single process's batch of the same permutation), so
    a step's averaged gradient is the single process's; the metrics gather every rank's
    predictions, only rank 0 writes, and the test AUC agrees."""
    import json
    import subprocess
    import sys

    common = [
        "data.source.n_train=20000",
        "data.source.n_val=5000",
        "data.source.n_test=5000",
        "trainer.max_epochs=3",
        "threads=1",
        "efficiency=false",
        f"paths.cache_dir={tmp_path}/cache",
        *FAMILIES[family],
    ]
    batch, auc = 512, "auc"
    if family == "retrieval":
        write_markov_log(tmp_path / "log.txt", n_users=1500, n_items=60)
        common = [c for c in common if not c.startswith("data.source.n_")]
        common += [f"data.source.events.path={tmp_path}/log.txt", "data.source.n_eval_negatives=20"]
        batch, auc = 128, "full/auc"

    def start(name: str, *extra: str) -> subprocess.Popen:
        args = [sys.executable, "-m", "ranklab.train", *common, f"hydra.run.dir={tmp_path}/{name}"]
        return subprocess.Popen(
            [*args, *extra], cwd=tmp_path, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL
        )

    def result(name: str, proc: subprocess.Popen) -> dict:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode()[-3000:]
        return json.loads((tmp_path / name / "metrics.json").read_text())

    # side by side (one thread each: their digits do not depend on the load), so that their
    # start-up overlaps; a cache both build is renamed into place by the first to finish
    procs = {
        "one": start("one", f"data.batch_size={batch}"),
        "two": start(
            "two",
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            f"data.batch_size={batch // 2}",
        ),
    }
    one, two = (result(name, proc) for name, proc in procs.items())
    assert two["environment"]["device"] == "cpu"
    # only rank 0 writes: no log file of rank 1's own in the folder (Hydra names it after the job)
    assert not list((tmp_path / "two").glob("*ddp_process*")), sorted((tmp_path / "two").iterdir())
    assert abs(two["test"][auc] - one["test"][auc]) < 0.002, (one["test"], two["test"])
    assert len(two["history"]) == len(one["history"])
    # train.log has one line an epoch, rank 0's (rank 1 added its own, with its own share of
    # the train loss), showing the history's loss: over every rank's rows (it was rank 0's)
    log = (tmp_path / "two" / "train.log").read_text().splitlines()
    lines = [x for x in log if "] epoch " in x]
    assert len(lines) == len(two["history"]), lines
    for line, h in zip(lines, two["history"], strict=True):
        assert f"train/loss {h['train_loss']:.5f}" in line
    for a, b in zip(one["history"], two["history"], strict=True):
        assert abs(a["train_loss"] - b["train_loss"]) < 2e-3


def test_two_processes_stop_together_on_a_signal_and_resume(tmp_path) -> None:
    """trainer=ddp, SIGTERM mid-epoch to rank 0 alone (as a scheduler's kill of the launching
    process) or to every rank (SLURM, torchrun): both ranks stop after the same batch, exit 143,
    the folder says interrupted, and ckpt_path=auto ends with the uninterrupted run's metrics
    and history. Lightning's handler broadcast from inside the signal handler and stopped the
    signalled rank alone: the ranks' collectives stopped matching and the run hung."""
    import json
    import signal
    import subprocess
    import sys

    common = [
        "data.source.n_train=12000",
        "data.source.n_val=2000",
        "data.source.n_test=2000",
        "model=deepfm",
        "model.hidden_units=[32]",
        "model.dropout=0.2",
        "trainer.max_epochs=3",
        "callbacks.early_stopping.patience=10",
        "threads=1",
        "efficiency=false",
        "print_summary=false",
        "logger=csv",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "data.batch_size=256",
        f"paths.cache_dir={tmp_path}/cache",
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "PYTHONWARNINGS": "ignore"}

    def cli(name: str, *extra: str) -> subprocess.CompletedProcess[str]:
        args = [sys.executable, "-m", "ranklab.train", *common, f"hydra.run.dir={tmp_path / name}"]
        return subprocess.run(
            [*args, *extra], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env
        )

    def results(name: str) -> dict:
        m = json.loads((tmp_path / name / "metrics.json").read_text())
        return {k: m[k] for k in ("val", "test", "history", "best_epoch", "epochs")}

    assert cli("full").returncode == 0
    # (the last: during the last epoch's validation, after the last batch's agreement: it was
    # lost, and the run ended with status 0; it now stops at fit's end, before the test)
    for name, rank, epoch, during in (
        ("rank0", 0, 1, "train"),
        ("every", None, 1, "train"),
        ("last-validation", 0, 2, "validation"),
    ):
        fault = [
            "+callbacks.fault._target_=faults.SignalAt",
            f"+callbacks.fault.epoch={epoch}",
            f"+callbacks.fault.during={during}",
            f"+callbacks.fault.batch={0 if during == 'validation' else 5}",
            f"+callbacks.fault.signum={int(signal.SIGTERM)}",
            f"+callbacks.fault.marker={tmp_path / name}.sent",
            f"+callbacks.fault.rank={'null' if rank is None else rank}",
        ]
        r = cli(name, *fault)
        assert r.returncode == 128 + signal.SIGTERM, r.stderr[-3000:]
        assert json.loads((tmp_path / name / "status.json").read_text())["status"] == "interrupted"
        r = cli(name, *fault, "ckpt_path=auto")
        assert r.returncode == 0, r.stderr[-3000:]
        assert results(name) == results("full"), name
