"""`make bench` runs end to end (tiny sizes) and reports framework / bare ratios."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def load_bench(name: str):
    """The script ``benchmarks/<name>.py`` as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


@pytest.mark.parametrize("extra", [[], ["--no-floor", "--cpu-time"]], ids=["floor", "cpu-time"])
def test_bench_smoke(tmp_path: Path, extra: list[str]) -> None:
    bench = load_bench("throughput")
    tiny = [
        "data.source.n_train=3000",
        "data.source.n_val=1000",
        "data.source.n_test=500",
        "model.hidden_units=[16]",
        f"paths.cache_dir={tmp_path}/cache",
    ]
    rc = bench.main(
        [
            "--data-dir",
            str(tmp_path / "none"),
            "--models",
            "deepfm",
            "--seq-models",
            "--epochs",
            "2",
            "--repeats",
            "1",
            "--threads",
            "1",
            "--out",
            str(tmp_path),
            *extra,
            "--overrides",
            *tiny,
        ]
    )
    assert rc == 0
    out = json.loads(next(tmp_path.glob("throughput-*.json")).read_text())
    res = out["suites"]["CTR"]["results"]["deepfm"]
    keys = [
        "framework_train",
        "bare_train_same_module",
        "bare_train_independent",
        "framework_eval",
        "bare_eval_same_module",
        "bare_eval_independent",
    ]
    floor = ["floor_train", "floor_eval"]
    for key in keys if extra else keys + floor:
        assert res[key] > 0, key
    if extra:
        assert not set(floor) & set(res) and out["clock"] == "process CPU time"


def test_the_lightning_floor_does_the_tasks_work(tmp_path: Path) -> None:
    """The floor is a fair measure of Lightning's own cost only if it does ranklab's work: the
    same loss for a batch (task's penalties included) and the same validation figures."""
    bench = load_bench("throughput")
    from ranklab.config import compose

    over = ["task.embedding_regularizer=0.01", "task.net_regularizer=0.003"]
    over += ["data.source.n_train=600", "data.source.n_val=700", "data.source.n_test=200"]
    cfg = compose(["model=deepfm", *over, f"paths.cache_dir={tmp_path}/cache"])
    dm, model, task = bench.build(cfg)
    floor = bench.floor_of(cfg, model, task)
    model.eval()  # dropout off: the two forward passes see the same network
    batch = next(iter(dm.train_dataloader()))
    with torch.no_grad():
        assert float(floor.training_step(batch, 0)) == pytest.approx(
            float(task.training_step(batch, 0)), rel=1e-6
        )
    logged = {}
    for module in (task, floor):
        trainer = bench.eval_trainer()
        trainer.validate(module, datamodule=dm, verbose=False)
        logged[module] = {k: float(v) for k, v in trainer.callback_metrics.items()}
    # the synthetic data has users: grouped AUC too
    names = ("auc", "logloss", "ne", "calibration", "gauc")
    assert set(logged[floor]) == {f"val/{k}" for k in names}
    assert set(logged[floor]) <= set(logged[task])
    for key, value in logged[floor].items():
        assert value == pytest.approx(logged[task][key], rel=1e-5), key


def test_the_floor_trains_the_same_weights_as_ranklab(tmp_path: Path) -> None:
    """The floor and ranklab, fitted as the bench fits them, end with the same weights bit for
    bit: the same batches in the same order, loss, penalties, optimiser and gradient clipping
    (a floor that left one out would train other weights)."""
    import lightning as L

    bench = load_bench("throughput")
    from ranklab.config import compose

    over = ["task.embedding_regularizer=0.01", "task.net_regularizer=0.003", "model.dropout=0"]
    over += ["data.source.n_train=1200", "data.source.n_val=200", "data.source.n_test=200"]
    over += ["data.batch_size=256", "trainer.gradient_clip_val=0.05", "optimizer=adamw"]
    cfg = compose(["model=deepfm", *over, f"paths.cache_dir={tmp_path}/cache"])
    fitted = [bench.timed_fit(cfg, 2, L.Callback(), floor=f).model for f in (False, True)]
    ours, floor = (dict(m.named_parameters()) for m in fitted)
    assert ours.keys() == floor.keys()
    L.seed_everything(cfg.seed, verbose=False)  # as timed_fit does: the initial weights
    moved = bench.build(cfg)[1].state_dict()
    for name, p in ours.items():
        assert torch.equal(p, floor[name]), name
        assert not torch.equal(p, moved[name]), name  # it trained
    opt = bench.floor_of(cfg, fitted[1], bench.build(cfg)[2]).configure_optimizers()
    assert isinstance(opt, torch.optim.AdamW)


def test_the_bare_loop_adds_the_penalties_the_task_adds(tmp_path: Path) -> None:
    """Same work on both sides: the bare loop's L2 terms sum to the task's regularisation (it
    left out ``net_regularizer``, which the tuned LR and FM set)."""
    bench = load_bench("throughput")
    from ranklab.config import compose

    over = ["task.embedding_regularizer=0.01", "task.net_regularizer=0.003"]
    over += ["data.source.n_train=500", "data.source.n_val=200", "data.source.n_test=200"]
    cfg = compose(["model=deepfm", *over, f"paths.cache_dir={tmp_path}/cache"])
    _, model, task = bench.build(cfg)
    terms = bench.penalties(cfg, model, task.emb_params)
    bare = sum(c / 2 * sum(p.pow(2).sum() for p in ps) for c, ps in terms)
    assert [c for c, _ in terms] == [0.01, 0.003]
    assert float(bare) == float(task.regularization())


def test_eval_phases_lie_inside_the_validate_call(tmp_path: Path) -> None:
    bench = load_bench("eval_phases")
    from ranklab.config import compose

    cfg = compose(
        [
            "model=lr",
            "data.source.n_train=2000",
            "data.source.n_val=1000",
            "data.source.n_test=500",
            f"paths.cache_dir={tmp_path}/cache",
        ]
    )
    res = bench.phases(cfg, repeats=2)
    assert res["rows"] == 1000
    assert all(res[p] > 0 for p in bench.PHASES) and res["bare"] > 0 and res["floor"] > 0
    # medians of parts need not add up exactly; the parts lie inside the whole call
    assert max(res[p] for p in bench.PHASES) < res["ranklab"]


def test_step_phases_split_every_sides_steps(tmp_path: Path) -> None:
    bench = load_bench("step_phases")
    from ranklab.config import compose

    over = ["data.source.n_train=2000", "data.source.n_val=500", "data.source.n_test=500"]
    cfg = compose(["model=lr", *over, "data.batch_size=256", f"paths.cache_dir={tmp_path}/cache"])
    res = bench.phases(cfg, epochs=2, repeats=1)
    assert list(res) == ["bare", "Lightning floor", "ranklab"]
    for side, phases in res.items():
        assert phases["steps"] == 8, side  # 2000 rows / 256: the second epoch's steps
        assert all(phases[p] >= 0 for p in [*bench.PHASES, bench.BETWEEN]), side
        assert phases["backward"] > 0 and phases["forward + loss"] > 0, side
    assert res["bare"]["closure end"] == 0  # a Lightning phase only
    assert res["ranklab"]["closure end"] > 0 and res["Lightning floor"]["closure end"] > 0


def test_structure_matched_model_approaches_the_bayes_ceiling() -> None:
    ceiling = load_bench("seq_ceiling")
    small = ["n_train=30000", "n_val=4000", "n_test=4000", "n_users=2000", "n_items=100"]
    test_auc, bayes = ceiling.main([*small, "--epochs", "6", "--batch-size", "256"])
    # the model has the generator's form, so it gets close to the ceiling but never above it
    # by more than sampling noise of 4000 test rows
    assert bayes - 0.03 < test_auc < bayes + 0.01


def test_gpu_bench_runs_on_the_cpu_as_a_smoke_test(tmp_path: Path) -> None:
    """`make bench-gpu` without CUDA: tiny Criteo-shaped data, both models, the JSON written."""
    bench = load_bench("gpu_throughput")
    args = ["--rows", "4096", "--batch", "1024", "--max-vocab", "200", "--epochs", "2"]
    args += ["--repeats", "1", "--precision", "32-true", "--out", str(tmp_path)]
    args += ["--overrides", f"paths.cache_dir={tmp_path}/cache", "model.hidden_units=[32]"]
    assert bench.main(["--models", "dcnv2", *args]) == 0
    (out,) = tmp_path.glob("gpu-*.json")

    def no_nan(token: str) -> None:
        raise AssertionError(f"{token} in {out.name}: not strict JSON")

    (row,) = json.loads(out.read_text(), parse_constant=no_nan)["results"]
    assert row["model"] == "dcnv2" and row["ranklab_samples_per_s"] > 0 and row["ratio"] > 0
    assert row["ranklab_peak_gpu_mb"] is None  # no CUDA here: no GPU memory to report
    assert [len(row["raw"][k]) for k in ("ranklab", "bare")] == [1, 1]


def test_bench_data_smoke(tmp_path: Path) -> None:
    """`make bench-data` end to end on a small file, the peer skipped; both layouts and the
    streamed build encode the same rows, and the loaders' figures (in memory, out of core,
    bare) are all measured."""
    bench = load_bench("data_throughput")
    out = tmp_path / "out.json"
    args = ["--rows", "4000", "--repeats", "1", "--work", str(tmp_path), "--no-peer"]
    args += ["--budget", "2MB", "--block-rows", "1000"]  # the streamed row too
    assert bench.main([*args, "--batch-size", "512", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    raw, bars, streamed = res["preprocess"].values()
    assert raw[0]["rows"] == bars[0]["rows"] == streamed[0]["rows"] == 4000
    assert raw[0]["vocab"] == streamed[0]["vocab"]  # the same vocabularies, streamed
    assert raw[0]["seconds"] > 0 and raw[0]["rss_mb"] > 0
    for loader in ("ranklab", "ranklab out of core", "bare"):
        assert min(res["loader"][loader]) > 0
