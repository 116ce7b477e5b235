"""train(cfg) end to end: outputs, determinism, checkpoints, config errors, CLI exit codes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import open_dict
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from ranklab.config import compose, conf_dir
from ranklab.errors import ConfigError
from ranklab.train import build, train

ROOT = Path(__file__).resolve().parents[2]


def test_run_writes_outputs_and_metrics(make_cfg, tmp_path: Path) -> None:
    metrics = train(make_cfg("model=deepfm", "model.hidden_units=[32,32]"))
    run = tmp_path / "run"
    on_disk = json.loads((run / "metrics.json").read_text())
    assert on_disk["test"]["auc"] == metrics["test"]["auc"]
    for key in (
        "val",
        "test",
        "best_epoch",
        "seed",
        "git_commit",
        "config_hash",
        "data_fingerprint",
        "wall_time_s",
        "train_samples_per_s",
        "bayes",
        "n_params",
    ):
        assert key in on_disk, key
    assert set(on_disk["test"]) >= {"auc", "logloss", "ne", "calibration", "gauc"}
    assert on_disk["environment"] == {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": "cpu",
    }
    assert (
        on_disk["bayes"]["test"]["auc"] > on_disk["test"]["auc"] - 0.02
    )  # the ceiling is a ceiling
    assert (run / "config.yaml").is_file() and (run / "csv" / "metrics.csv").is_file()
    ckpt = run / "checkpoints" / "best.ckpt"
    assert ckpt.is_file()
    state = torch.load(ckpt, weights_only=True, map_location="cpu")  # no pickled objects inside
    assert state["hyper_parameters"]["hparams"]["model"]["_target_"] == "ranklab.models.DeepFM"
    assert any(k.startswith("model.") for k in state["state_dict"])


def test_same_config_and_seed_give_identical_metrics(make_cfg, tmp_path: Path) -> None:
    a = train(
        make_cfg(
            "model=dcnv2", "model.hidden_units=[32]", "paths.output_dir=" + str(tmp_path / "a")
        )
    )
    b = train(
        make_cfg(
            "model=dcnv2", "model.hidden_units=[32]", "paths.output_dir=" + str(tmp_path / "b")
        )
    )
    assert a["val"] == b["val"] and a["test"] == b["test"] and a["history"] == b["history"]
    assert a["config_hash"] == b["config_hash"]
    c = train(
        make_cfg(
            "model=dcnv2",
            "model.hidden_units=[32]",
            "seed=7",
            "paths.output_dir=" + str(tmp_path / "c"),
        )
    )
    assert c["test"]["auc"] != a["test"]["auc"] and c["config_hash"] != a["config_hash"]


def test_best_checkpoint_is_restored_before_test(make_cfg) -> None:
    m = train(make_cfg("model=lr", "trainer.max_epochs=6", "optimizer.lr=0.05"))
    best = next(h for h in m["history"] if h["epoch"] == m["best_epoch"])
    assert m["val"]["auc"] == pytest.approx(best["auc"], abs=1e-7)


@pytest.mark.parametrize("every", [1, 2])
def test_bars_lr_decay_and_early_stopping(make_cfg, every: int) -> None:
    # BARS: each non-improving validation epoch multiplies the lr by 0.1; two in a row stop.
    # With validation every 2 epochs the scheduler steps only after validations.
    m = train(
        make_cfg(
            "model=lr",
            "trainer.max_epochs=40",
            "optimizer.lr=0.3",
            f"trainer.check_val_every_n_epoch={every}",
        )
    )
    hist = m["history"]
    assert [h["epoch"] for h in hist] == list(range(every - 1, every * len(hist), every))
    best, bad_streak, decays = -1.0, 0, 0
    for e, h in enumerate(hist):
        improved = h["auc"] > best + 1e-6
        best = max(best, h["auc"]) if improved else best
        bad_streak = 0 if improved else bad_streak + 1
        if e + 1 < len(hist):
            expected = h["lr"] if improved else max(h["lr"] * 0.1, 1e-6)
            decays += not improved
            assert hist[e + 1]["lr"] == pytest.approx(expected, rel=1e-9), (e, hist)
    assert decays >= 1
    if len(hist) < 40 // every:
        assert bad_streak == 2  # stopped exactly at the second non-improving epoch in a row


def test_unknown_key_and_option_fail_with_hydra_errors() -> None:
    with pytest.raises(
        (ConfigCompositionException, ConfigAttributeError, ConfigKeyError), match="embeding_dim"
    ):
        compose(["model.embeding_dim=3"])
    with pytest.raises((MissingConfigException, ConfigCompositionException), match="nosuchmodel"):
        compose(["model=nosuchmodel"])


@pytest.mark.parametrize(
    ("args", "key", "message"),
    [
        (["model=nosuchmodel"], "model", "no option 'nosuchmodel' in conf/model/; its options: "),
        (["model=dpfm"], "model", "no option 'dpfm' in conf/model/ (did you mean 'deepfm'?)"),
        (["sed=1"], "sed", "no such key in the config (did you mean 'seed'?)"),
        (["data.bach_size=1"], "data.bach_size", "(did you mean 'data.batch_size'?)"),
        (["data.batch_size=[1"], "data.batch_size", "is not an override Hydra can read"),
        (["+model=lr"], "model", "is chosen twice"),
        (
            ["data=census_income", "data.source.split={method: time, column: age}"],
            "data.source.split",
            "no key 'column'; to replace it whole, delete it first: '~data.source.split'",
        ),
        (["+sede=3"], "sede", "nothing refers to it (did you mean 'seed'?"),
        (["+paths.dta_dir=x"], "paths.dta_dir", "did you mean 'paths.data_dir'?"),
        (["+tracking.nam=x"], "tracking.nam", "did you mean 'tracking.name'?"),
        (["+callbacks.foo=1"], "callbacks.foo", "must be a Lightning callback config with a"),
        (["+callbacks.early_stopping.patiense=1"], "callbacks.early_stopping.patiense", "takes no"),
        (["+logger.csv.foo=1"], "logger.csv.foo", "CSVLogger takes no argument 'foo'"),
        (["logger={csv: 3}"], "logger.csv", "must be a logger config with a _target_"),
        (["seed=${sede}"], "seed", "Interpolation key 'sede' not found"),
        (["-m", "model=lr,nosuchmodel"], "model", "no option 'nosuchmodel'"),
        (["-m", "seed=1,2", "+sede=3"], "sede", "nothing refers to it"),
        (["-m", "hydra/launcher=nosuch", "seed=1,2"], "hydra.launcher", "Hydra's group"),
    ],
)
def test_command_lines_that_do_not_compose_are_one_line_and_status_2(
    capsys, args: list[str], key: str, message: str
) -> None:
    """Checked before Hydra runs (and makes a run folder): Hydra's own report of a misspelt
    option or key is several lines and status 1, and a key added with + that nothing reads,
    or a callback entry that is not one, would run (or fail after the data is read)."""
    from ranklab.train import _check_composes

    with pytest.raises(SystemExit) as stop:
        _check_composes(["ranklab-train", *args])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"error: config key '{key}': ") and message in err, err


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["+x=7", "seed=${x}"],  # a key of one's own, for an interpolation
        ["+paths.scratch=/tmp", "paths.cache_dir=${paths.scratch}/cache"],
        ["+run=a", "hydra.run.dir=/tmp/${run}"],  # referred to by Hydra's settings
        ["-m", "model=lr,fm", "seed=1,2"],
        ["+trainer.num_nodes=1"],
        ["data=census_income", "~data.source.split", "+data.source.split={method: time}"],
        ["callbacks.early_stopping=null"],
        *([f"callbacks={p.stem}"] for p in sorted((conf_dir() / "callbacks").glob("*.yaml"))),
        *([f"logger={p.stem}"] for p in sorted((conf_dir() / "logger").glob("*.yaml"))),
        *([f"paths={p.stem}"] for p in sorted((conf_dir() / "paths").glob("*.yaml"))),
    ],
    ids=str,
)
def test_command_lines_that_compose_pass_the_checks(capsys, args: list[str]) -> None:
    from ranklab.train import _check_composes

    _check_composes(["ranklab-train", *args])
    assert capsys.readouterr().err == ""


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ranklab.train", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_bad_inputs_exit_nonzero_with_clear_messages(tmp_path: Path) -> None:
    base = [
        f"paths.output_dir={tmp_path}/out",
        f"paths.cache_dir={tmp_path}/cache",
        "trainer.enable_progress_bar=false",
    ]
    r = run_cli("model=nosuchmodel", *base, cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip().startswith("error: config key 'model': no option 'nosuchmodel'")
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # before Hydra makes the run folder
    r = run_cli("data=frappe_x1", f"paths.data_dir={tmp_path}/nowhere", *base, cwd=tmp_path)
    assert r.returncode == 2
    assert "nowhere/frappe_x1/train.csv" in r.stderr and "paths.data_dir" in r.stderr
    r = run_cli("trainer.max_epocs=1", *base, cwd=tmp_path)
    assert r.returncode != 0 and "max_epocs" in r.stderr
    r = run_cli(*base, "paths.output_dir=/proc/ranklab-test/run", cwd=tmp_path)  # cannot exist
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (
        "error: config key 'paths.output_dir': cannot write in /proc/ranklab-test/run: "
        "No such file or directory"
    )
    # the default outputs/ is a file: Hydra's own mkdir of the run (or multirun) folder was a
    # traceback with exit status 1
    (tmp_path / "outputs").write_text("not a folder")
    for mode in ([], ["-m", "seed=1,2"]):
        r = run_cli(*mode, f"paths.cache_dir={tmp_path}/cache", cwd=tmp_path)
        assert r.returncode == 2, r.stderr[-2000:]
        assert re.fullmatch(
            rf"error: config key 'paths.log_dir': cannot make outputs/(runs/\S+|multirun/\S+): "
            rf"{tmp_path}/outputs is a file, not a folder",
            r.stderr.strip().splitlines()[-1],
        ), r.stderr[-2000:]
    assert (tmp_path / "outputs").read_text() == "not a folder"


@pytest.mark.parametrize(
    ("overrides", "key", "message"),
    [
        (["+data.source.lable=x"], "data.source.lable", "SyntheticCTR takes no argument"),
        (["+data.bogus=1"], "data.bogus", "RankDataModule takes no argument 'bogus'"),
        (["model=dnn", "model.dropout=1.5"], "model.dropout", "must be in [0, 1)"),
        (["model=dnn", "model.hidden_units=[16,0]"], "model.hidden_units", ">= 1 (each)"),
        (["model=deepfm", "model.embedding_dim=0"], "model.embedding_dim", ">= 1"),
        (["data.block_rows=-3"], "data.block_rows", "must be >= 1 or null, got -3"),
    ],
)
def test_config_values_no_model_or_source_takes_fail_naming_the_key(
    make_cfg, overrides: list[str], key: str, message: str
) -> None:
    """Caught before any data is read, as one line (no Hydra wrapping, no torch traceback)."""
    with pytest.raises(
        ConfigError, match=rf"config key '{re.escape(key)}': .*{re.escape(message)}"
    ):
        build(make_cfg(*overrides))


def test_frappe_rows_with_bad_label_fail_with_line(tmp_path: Path, shared_data: Path) -> None:
    d = tmp_path / "data" / "frappe_x1"
    d.mkdir(parents=True)
    # small excerpts of the real files (written to tmp, never into the repository)
    for name in ("train.csv", "valid.csv", "test.csv"):
        lines = (shared_data / "frappe_x1" / name).read_bytes().split(b"\r\n")[:200]
        (d / name).write_bytes(b"\r\n".join(lines) + b"\r\n")
    lines = (d / "valid.csv").read_bytes().split(b"\r\n")
    lines[5] = b"3" + lines[5][1:]
    (d / "valid.csv").write_bytes(b"\r\n".join(lines))
    r = run_cli(
        "data=frappe_x1",
        f"paths.data_dir={tmp_path}/data",
        f"paths.output_dir={tmp_path}/o",
        f"paths.cache_dir={tmp_path}/c",
        "trainer.enable_progress_bar=false",
        cwd=tmp_path,
    )
    assert r.returncode == 2
    assert "valid.csv, line 6, column 'label': label must be 0 or 1, found '3'" in r.stderr
    assert not list((tmp_path / "c").glob("frappe_x1-*"))  # no cache left behind


def test_crosses_matter_on_synthetic_data(make_cfg, tmp_path: Path) -> None:
    """The ordering the default data is built for, on a small instance: models that cross
    features beat LR clearly, and get close to the Bayes-optimal ceiling."""
    data = [
        "data.source.n_train=40000",
        "data.source.n_val=10000",
        "data.source.n_test=10000",
        "data.source.vocab_sizes=[20,10,10,5,5,5]",
        "data.source.n_numeric=1",
        "data.source.n_pairs=4",
        "data.source.n_triples=1",
        "data.source.triple_max_vocab=10",
        "data.batch_size=1024",
        "trainer.max_epochs=25",
    ]
    small = ["model.hidden_units=[64,64]"]
    out = {}
    for name, extra in (("lr", ["optimizer.lr=0.01"]), ("deepfm", small), ("dcnv2", small)):
        out[name] = train(
            make_cfg(f"model={name}", *data, *extra, f"paths.output_dir={tmp_path}/{name}")
        )
    bayes = out["lr"]["bayes"]["test"]["auc"]
    for name in ("deepfm", "dcnv2"):
        assert out[name]["test"]["auc"] >= out["lr"]["test"]["auc"] + 0.02, (
            name,
            out[name]["test"],
        )
        assert out[name]["test"]["auc"] >= bayes - 0.02, (name, out[name]["test"], bayes)


def test_evaluate_reproduces_the_runs_test_metrics_and_names_bad_keys(
    make_cfg, tmp_path: Path
) -> None:
    from ranklab.errors import ConfigError
    from ranklab.evaluate import evaluate

    metrics = train(make_cfg("model=dnn", "model.hidden_units=[16]"))
    run = tmp_path / "run"
    again = evaluate(run, [])
    assert again["test"] == pytest.approx(metrics["test"], abs=1e-6)
    assert (run / "evaluations" / "default.json").is_file()
    bigger = evaluate(run, ["data.eval_batch_size=7"])  # other batches, same numbers
    # another synthetic draw (any generator setting) is another task: refused
    with pytest.raises(ConfigError, match=r"'data.source.n_test': the synthetic data evaluated is"):
        evaluate(run, ["data.source.n_test=500"])
    # a key the run's config holds as null is a key (it was refused as 'not a key')
    assert evaluate(run, ["data.memory_budget=2GB"])["test"] == pytest.approx(metrics["test"])
    assert bigger["test"] == pytest.approx(metrics["test"], abs=1e-5)
    with pytest.raises(ConfigError, match=r"task\.no_such_key"):
        evaluate(run, ["task.no_such_key=1"])
    # an added top-level or paths key nothing reads: refused before any data is built
    with pytest.raises(ConfigError, match=r"'paths\.dta_dir': is not a key of ranklab's config"):
        evaluate(run, ["+paths.dta_dir=/x"])
    with pytest.raises(ConfigError, match=r"'sede': .*did you mean 'seed'"):
        evaluate(run, ["+sede=3"])
    # a model these overrides change is refused in one line (it was load_state_dict's traceback)
    with pytest.raises(
        ConfigError,
        match=r"config key 'model.hidden_units': .*best.ckpt does not fit the model these "
        r"overrides build \(model\.mlp.* is \(16, \d+\) there, \(8, \d+\) here",
    ):
        evaluate(run, ["model.hidden_units=[8]"])
    assert json.loads((run / "metrics.json").read_text())["test"] == metrics["test"]


def test_evaluate_rebuilds_a_run_made_before_optimizer_groups(make_cfg, tmp_path: Path) -> None:
    """A config.yaml with task.lr / task.optimizer / task.lr_decay_factor (as runs made before
    the optimizer and scheduler groups wrote it) is upgraded, not refused."""
    from omegaconf import OmegaConf

    from ranklab.config import upgrade_config
    from ranklab.evaluate import evaluate

    metrics = train(make_cfg("model=lr", "trainer.max_epochs=1", "efficiency=false"))
    run = tmp_path / "run"
    old = OmegaConf.load(run / "config.yaml")
    with open_dict(old):
        del old["optimizer"], old["scheduler"]
        old.task._target_ = "ranklab.task.RankingTask"
        old.task.update(lr=0.001, optimizer="adam", weight_decay=0.0, lr_decay_factor=0.1)
    OmegaConf.save(old, run / "config.yaml")
    new = upgrade_config(old)
    assert new.optimizer._target_ == "torch.optim.Adam" and new.scheduler.factor == 0.1
    assert "lr" not in new.task
    assert evaluate(run, [])["test"] == pytest.approx(metrics["test"], abs=1e-6)


def test_a_split_with_no_group_holding_both_classes_warns_that_gauc_is_undefined() -> None:
    """Leave-last-out keeps one row per user in validation and test: grouped AUC is null
    there, which the run now says rather than reporting it silently."""
    from types import SimpleNamespace

    import numpy as np
    import torch

    from ranklab.data.dataset import GROUP_KEY
    from ranklab.data.schema import LabelSpec
    from ranklab.train import grouped_auc_warnings

    y = {"val": [1, 0, 1, 0], "test": [1, 0, 1, 0]}
    groups = {"val": [0, 1, 2, 3], "test": [0, 0, 1, 1]}  # test: each user has both classes
    dm = SimpleNamespace(
        data=SimpleNamespace(splits={s: {GROUP_KEY: np.array(g)} for s, g in groups.items()}),
        labels=lambda s: {"click": torch.tensor(y[s], dtype=torch.float32)},
    )
    schema = SimpleNamespace(labels=(LabelSpec("click"),), group="user")
    assert grouped_auc_warnings(dm, schema) == [
        "the val split has no user with both classes for 'click': grouped AUC (gauc) is "
        "undefined and reported as null (one row per user: the leave-last-out split)"
    ]
