"""Sweep configs: the search-space vocabulary, and errors that stop a sweep before any trial."""

from __future__ import annotations

from pathlib import Path

import pytest
from sweep_helpers import sweep_config

from ranklab.config import conf_dir
from ranklab.errors import ConfigError
from ranklab.sweep import check_spec, load_spec
from ranklab.sweep.space import parse_param, parse_value

PARAMS = {"optimizer.lr": "tag(log, interval(1e-3, 1e-2))", "optimizer": "choice(adam, adamw)"}


class FakeTrial:
    """Records what a parameter asks Optuna for."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []

    def suggest_categorical(self, *a, **kw):
        self.calls.append(("categorical", a, kw))
        return a[1][-1]

    def suggest_int(self, *a, **kw):
        self.calls.append(("int", a, kw))
        return a[2]

    def suggest_float(self, *a, **kw):
        self.calls.append(("float", a, kw))
        return a[1]


@pytest.mark.parametrize(
    ("expr", "call", "args", "kwargs"),
    [
        ("choice(4, 8, 16)", "categorical", ("k", [4, 8, 16]), {}),
        ("4,8", "categorical", ("k", [4, 8]), {}),
        ("choice([16],[32,32])", "categorical", ("k", ["[16]", "[32,32]"]), {}),
        ("range(1, 5)", "int", ("k", 1, 4), {"step": 1, "log": False}),
        ("range(2, 11, 4)", "int", ("k", 2, 10), {"step": 4, "log": False}),
        ("range(0.1, 0.5, 0.1)", "float", ("k", 0.1, 0.4), {"step": 0.1, "log": False}),
        ("interval(0, 0.5)", "float", ("k", 0.0, 0.5), {"step": None, "log": False}),
        ("tag(log, interval(1e-4, 1e-2))", "float", ("k", 1e-4, 1e-2), {"step": None, "log": True}),
        ("tag(int, interval(1, 100))", "int", ("k", 1, 100), {"step": 1, "log": False}),
        ("tag(log, int, interval(1, 64))", "int", ("k", 1, 64), {"step": 1, "log": True}),
    ],
)
def test_sweep_expressions_become_optuna_suggestions(expr, call, args, kwargs) -> None:
    trial = FakeTrial()
    parse_param("k", expr).suggest(trial)
    assert len(trial.calls) == 1
    got_call, got_args, got_kwargs = trial.calls[0]
    assert got_call == call
    assert got_args[0] == args[0]
    for got, want in zip(got_args[1:], args[1:]):
        assert got == pytest.approx(want)
    for k, want in kwargs.items():
        assert got_kwargs[k] == (pytest.approx(want) if isinstance(want, float) else want)


def test_values_turn_back_into_overrides() -> None:
    hidden = parse_param("model.hidden_units", "choice([16],[32,32])")
    assert hidden.override("[32,32]") == "model.hidden_units=[32,32]"
    assert hidden.decode("[32,32]") == [32, 32]
    group = parse_param("model", "choice(lr, deepfm)")
    assert group.override("deepfm") == "model=deepfm"
    flag = parse_param("x", "choice(true, 1)")  # True == 1 in Python: kept apart
    assert parse_value(flag.text(True)) is True and type(parse_value(flag.text(1))) is int
    spaced = parse_param("x", "choice('a b', [1,'x y'])")
    assert [spaced.decode(v) for v in spaced.choices] == ["a b", [1, "x y"]]
    lr = parse_param("optimizer.lr", "tag(log, interval(1e-5, 1e-2))")
    assert float(lr.text(3.3e-5)) == 3.3e-5
    assert parse_param("k", "range(0, 10, 5)").grid() == [0, 5]
    assert parse_param("k", "choice(a, b)").grid() == ["a", "b"]
    assert parse_param("k", "range(0.0, 1.0, 0.25)").grid() == [0.0, 0.25, 0.5, 0.75]


@pytest.mark.parametrize(
    ("override", "key", "words"),
    [
        ("params.model.init_sd=choice(0.1,1)", "params.model.init_sd", "compose"),
        ("params.optimizer.lr=choice()", "params.optimizer.lr", "empty choice"),
        ("params.trainer.max_epochs=range(5,1)", "params.trainer.max_epochs", "empty"),
        ("params.model.dropout=interval(0.5,0.1)", "params.model.dropout", "above its high"),
        ("params.optimizer.lr=tag(log,interval(0,1))", "params.optimizer.lr", "low > 0"),
        ("params.optimizer.lr=tag(loq,interval(1e-3,1))", "params.optimizer.lr", "unknown tag"),
        ("params.model=choice(lr,nosuch)", "params.model", "no option 'nosuch' in conf/model/"),
        ("params.optimizer.lr=0.1", "params.optimizer.lr", "not a sweep"),
        ("trails=4", "'trails'", "not a sweep setting"),
        ("sampler.sed=1", "sampler.sed", "not a sweep key"),
        ("sampler.name=bayes", "sampler.name", "tpe"),
        ("pruner.name=asha", "pruner.name", "hyperband"),
        ("metric=test/auc", "metric", "validation"),
        ("direction=max", "direction", "maximize"),
        ("experiment=nosuch", "experiment", "no option 'nosuch' in conf/experiment/"),
        ("+sede=3", "sede", "nothing refers to it (did you mean 'seed'?"),
        ("storage.grace_period=1", "storage.grace_period", "heartbeat_interval"),
        ("storage.url=sqlite://", "storage.url", "in-memory"),
    ],
)
def test_bad_sweep_configs_fail_naming_the_key(
    tmp_path: Path, override: str, key: str, words: str
) -> None:
    path = sweep_config(tmp_path, PARAMS, trials=2)
    with pytest.raises(ConfigError) as err:
        check_spec(load_spec(str(path), [override]))
    assert key in str(err.value) and words in str(err.value)


def test_grid_sampler_refuses_continuous_parameters(tmp_path: Path) -> None:
    path = sweep_config(tmp_path, PARAMS, trials=2, sampler={"name": "grid"})
    with pytest.raises(ConfigError, match=r"params\.optimizer\.lr.*grid sampler"):
        load_spec(str(path))


def test_typo_in_the_sweep_file_names_the_key(tmp_path: Path) -> None:
    path = sweep_config(tmp_path, PARAMS, trials=2, pruner={"name": "median", "n_warmup": 1})
    with pytest.raises(ConfigError, match=r"pruner\.n_warmup.*not a sweep key"):
        load_spec(str(path))
    with pytest.raises(ConfigError, match="no sweep config"):
        load_spec("no_such_sweep")
    path.write_text("trials: 2\nparams: {optimizer.lr: [1\n")  # a YAML error: one line
    with pytest.raises(ConfigError, match=r"'sweep': .*\.yaml, line 3, column 1: not YAML"):
        load_spec(str(path))


def test_typo_fails_before_any_trial_with_exit_code_2(tmp_path: Path, run_cli) -> None:
    path = sweep_config(tmp_path, PARAMS, trials=2)
    proc = run_cli(f"sweep={path}", "params.model.init_sd=choice(0.1,1)", timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "params.model.init_sd" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "sweeps").exists()  # no study, no trial


@pytest.mark.parametrize("name", sorted(p.stem for p in (conf_dir() / "sweep").glob("*.yaml")))
def test_shipped_sweep_configs_compose(name: str) -> None:
    spec = load_spec(name)
    check_spec(spec)  # every parameter path and group option exists (no data needed)
    assert spec.params and spec.trials >= 1


def test_command_line_routes_sweep_keys_and_training_overrides(tmp_path: Path) -> None:
    path = sweep_config(tmp_path, PARAMS, trials=2)
    spec = load_spec(
        str(path),
        ["trials=7", "paths.data_dir=../data", "~params.optimizer", "study_name=s2"],
    )
    assert spec.trials == 7 and spec.study_name == "s2"
    assert "paths.data_dir=../data" in list(spec.conf.fixed)
    assert [p.key for p in spec.params] == ["optimizer.lr"]
    assert spec.storage_url == f"sqlite:///{tmp_path}/sweeps/tiny/study.db"
    pg = load_spec(str(path), ["storage.url=postgresql://u:p@db.example/sweeps"])
    assert pg.storage_url.startswith("postgresql+psycopg")  # a driver that is installed


def test_the_best_config_repeats_the_workers_thread_count(tmp_path: Path) -> None:
    """``--workers N`` runs each trial with threads=cpus/N (not a sweep key): the best config
    says so, or it reruns the trial with another thread count and other digits."""
    import optuna

    from ranklab.sweep.outputs import best_config

    spec = load_spec(str(sweep_config(tmp_path, {"optimizer.lr": "choice(0.001, 0.01)"}, 2)))
    spec.conf.fixed = [o for o in spec.conf.fixed if not str(o).startswith("threads=")]
    dist = {"optimizer.lr": optuna.distributions.CategoricalDistribution([0.001, 0.01])}
    for attrs, expected in (({"threads": 1}, "threads: 1"), ({}, None)):
        trial = optuna.trial.create_trial(
            params={"optimizer.lr": 0.01}, distributions=dist, value=0.7, user_attrs=attrs
        )
        text = best_config(spec, trial)
        assert "lr: 0.01" in text
        assert ("threads:" in text) == (expected is not None)
        if expected:
            assert expected in text


def test_a_storage_the_sweep_cannot_use_is_one_line(tmp_path: Path, run_cli) -> None:
    """Another database kind, or a PostgreSQL server that is not there: exit 2, one line,
    the password masked (they were an ImportError and a 115-line traceback)."""
    path = sweep_config(tmp_path, PARAMS, trials=1)
    with pytest.raises(ConfigError, match=r"'storage.url': a mysql database: .* SQLite"):
        load_spec(str(path), ["storage.url=mysql://x@localhost/db"])
    proc = run_cli(f"sweep={path}", "storage.url=postgresql://u:secret@127.0.0.1:1/x", timeout=60)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "storage.url': cannot use postgresql" in err[0], err
    assert "secret" not in proc.stderr and "***" in err[0]
