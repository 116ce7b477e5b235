"""Training choices as config (optimisers, lr schedules, per-label losses), labels and their
errors, multi-task training end to end."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from ranklab.config import CONF_DIR, compose
from ranklab.data import SyntheticCTR, SyntheticMTL
from ranklab.errors import ConfigError, DataError
from ranklab.train import train

MTL_TINY = [
    "data=synthetic_mtl",
    "data.source.n_train=6000",
    "data.source.n_val=2000",
    "data.source.n_test=2000",
    "data.source.vocab_sizes=[20,10,5,5]",
    "data.batch_size=512",
    "model.embedding_dim=4",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
    "print_summary=false",
]


def test_sgd_with_a_cosine_schedule_trains(make_cfg) -> None:
    m = train(make_cfg("model=lr", "optimizer=sgd", "scheduler=cosine", "trainer.max_epochs=4"))
    lrs = [h["lr"] for h in m["history"]]
    # CosineAnnealingLR, T_max = max_epochs: lr_e = 0.01 * (1 + cos(pi e / 4)) / 2, per epoch
    expected = [0.01 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(len(lrs))]
    assert lrs == pytest.approx(expected, rel=1e-9)
    assert m["test"]["auc"] > 0.55


def test_an_optimiser_added_by_a_yaml_file_alone_trains(
    make_cfg, tmp_path: Path, monkeypatch
) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "optimizer" / "nadam.yaml").write_text(
        "_target_: torch.optim.NAdam\n_partial_: true\nlr: 2.0e-3\n"
    )
    monkeypatch.setenv("RANKLAB_CONF", str(conf))
    cfg = make_cfg("model=lr", "optimizer=nadam", "trainer.max_epochs=1")
    assert cfg.optimizer._target_ == "torch.optim.NAdam"
    m = train(cfg)
    assert m["history"][0]["lr"] == pytest.approx(2e-3) and math.isfinite(m["test"]["auc"])


def test_multi_task_run_reports_every_label_and_its_ceiling(make_cfg) -> None:
    m = train(make_cfg("model=mmoe", *MTL_TINY, tiny=False))
    for key in ("click/auc", "conversion/auc", "ctcvr/auc", "conversion/counterfactual/auc"):
        assert key in m["test"] and key in m["bayes"]["test"], key
    assert "conversion/counterfactual/auc" not in m["val"]  # the counterfactual is test-only
    assert m["val"]["auc"] == pytest.approx(
        (m["val"]["click/auc"] + m["val"]["conversion/auc"]) / 2
    )
    assert m["bayes"]["test"]["click/auc"] > m["test"]["click/auc"] - 0.02


def test_single_task_model_on_one_of_several_labels(make_cfg, tmp_path) -> None:
    m = train(
        make_cfg(
            "model=dnn",
            "model.hidden_units=[16]",
            "task.labels=[conversion]",
            "task.monitor=val/conversion/auc",
            *MTL_TINY,
            tiny=False,
        )
    )
    assert {"conversion/auc", "conversion/counterfactual/auc"} <= set(m["test"])
    assert "click/auc" not in m["test"] and "ctcvr/auc" not in m["test"]  # no click head
    cfg = make_cfg("model=dnn", "task.labels=[nope]", *MTL_TINY, tiny=False)
    cfg.paths.output_dir = str(tmp_path / "nope")  # (another config: a folder of its own)
    with pytest.raises(ConfigError, match=r"task\.labels.*nope"):
        train(cfg)


def test_per_label_loss_and_weight_from_config(make_cfg) -> None:
    from ranklab.losses import EntireSpace
    from ranklab.train import build

    cfg = make_cfg(
        "model=shared_bottom",
        *MTL_TINY,
        "+task.losses.conversion._target_=ranklab.losses.EntireSpace",
        "+task.loss_weights.conversion=0.5",
        tiny=False,
    )
    _, _, task = build(cfg)
    assert isinstance(task.losses["conversion"], EntireSpace)
    assert task.weights == {"click": 1.0, "conversion": 0.5}
    with pytest.raises(ConfigError, match=r"task\.loss_weights\.nope"):
        build(make_cfg("model=shared_bottom", *MTL_TINY, "+task.loss_weights.nope=1", tiny=False))
    # a loss that cannot train its label: named when the task is built (a ValueError and a
    # KeyError at the first training step)
    esmm = "ranklab.losses.EntireSpace"
    with pytest.raises(ConfigError, match=r"'task\.losses\.click': EntireSpace needs a cond"):
        build(make_cfg("model=mmoe", *MTL_TINY, f"+task.losses.click._target_={esmm}", tiny=False))
    with pytest.raises(
        ConfigError, match=r"'task\.losses\.conversion': .* condition 'click', which this run"
    ):
        build(
            make_cfg(
                "model=dnn",
                *MTL_TINY,
                "task.labels=[conversion]",
                f"+task.losses.conversion._target_={esmm}",
                tiny=False,
            )
        )


def write_split(d: Path, rows: list[str], header: str = "clk,conv,user,ad") -> None:
    d.mkdir(parents=True, exist_ok=True)
    for name in ("train.csv", "valid.csv", "test.csv"):
        (d / name).write_text("\n".join([header, *rows]) + "\n")


def csv_cfg(make_cfg, tmp_path: Path, labels: str, *extra: str):
    """A two-label CSV data config, from overrides alone."""
    src = "data.source"
    return make_cfg(
        "data=taobaoad_tiny",
        f"paths.data_dir={tmp_path}",
        f"{src}.dir={tmp_path}/d",
        f"{src}.name=d",
        f"{src}.files={{train: train.csv, val: valid.csv, test: test.csv}}",
        f"~{src}.label",
        f"+{src}.labels={labels}",
        f"~{src}.features",
        f"+{src}.features={{categorical: [user, ad]}}",
        f"{src}.group=user",
        "model=mmoe",
        "model.embedding_dim=4",
        "trainer.max_epochs=1",
        "print_summary=false",
        *extra,
        tiny=False,
    )


LABELS = "[click, {name: conversion, column: conv, condition: click}]"


def test_label_errors_name_file_line_and_column(make_cfg, tmp_path: Path) -> None:
    rows = [f"{i % 2},{(i % 4 == 1 and 1) or 0},u{i % 5},a{i % 7}" for i in range(40)]
    # a declared label column the file lacks
    write_split(tmp_path / "d", rows)
    with pytest.raises(DataError, match=r"label 'click'.*column 'click'.*does not have"):
        train(csv_cfg(make_cfg, tmp_path, LABELS))
    labels = "[{name: click, column: clk}, {name: conversion, column: conv, condition: click}]"
    # a label outside its kind (binary: 0 or 1), on line 4
    bad = rows.copy()
    bad[2] = "2,0,u1,a1"
    write_split(tmp_path / "d", bad)
    with pytest.raises(DataError, match=r"train.csv, line 4, column 'clk': label must be 0 or 1"):
        train(csv_cfg(make_cfg, tmp_path, labels))
    # a conversion on a row without a click, on line 5
    bad = rows.copy()
    bad[3] = "0,1,u1,a1"
    write_split(tmp_path / "d", bad)
    with pytest.raises(DataError, match=r"line 5, column 'conv'.*observed only where click == 1"):
        train(csv_cfg(make_cfg, tmp_path, labels))
    # a condition that names no label
    with pytest.raises(ConfigError, match=r"data.source.labels\[1\].condition.*'clk'"):
        train(
            csv_cfg(
                make_cfg,
                tmp_path,
                "[{name: click, column: clk}, {name: c, column: conv, condition: clk}]",
            )
        )


def test_a_regression_label_beside_a_binary_one_keeps_the_default_monitor(
    make_cfg, tmp_path: Path
) -> None:
    """The plain names are means over the labels that have each metric: ``val/auc`` is the
    binary label's (it was left out, and the default monitor refused the run), ``val/mse`` the
    regression label's."""
    rows = [f"{i % 2},{(i * 7) % 10 / 3:.3f},u{i % 5},a{i % 7}" for i in range(80)]
    write_split(tmp_path / "d", rows, header="clk,age,user,ad")
    labels = "[{name: click, column: clk}, {name: agey, column: age, kind: regression}]"
    m = train(csv_cfg(make_cfg, tmp_path, labels, "~data.source.group"))
    for split in ("val", "test"):
        v = m[split]
        assert v["auc"] == v["click/auc"] and v["mse"] == v["agey/mse"], v
        assert "agey/auc" not in v and "click/mse" not in v


def test_synthetic_ctr_too_few_small_fields_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="triple_max_vocab"):
        SyntheticCTR(vocab_sizes=[50] * 4, n_pairs=2, n_triples=1)


def test_synthetic_mtl_plants_the_correlation_and_the_counterfactual() -> None:
    for rho in (0.2, 0.9):
        src = SyntheticMTL(n_train=20000, n_val=5000, n_test=5000, task_correlation=rho)
        _, p_click, p_conv, _ = src.generate()
        z = np.log(p_click / (1 - p_click)), np.log(p_conv / (1 - p_conv))
        assert np.corrcoef(*z)[0, 1] == pytest.approx(rho, abs=0.03)
    data = src.build()
    test = data.splits["test"]
    assert (test["conversion"] <= test["click"]).all()  # a conversion needs a click
    clicked = test["click"] == 1
    assert (test["conversion_if_clicked"][clicked] == test["conversion"][clicked]).all()
    rate = test["conversion"][clicked].mean()
    assert 0.05 < rate < 0.12  # a few percent of clicks convert
    assert "conversion_if_clicked" not in data.splits["train"]
    bayes = data.meta["bayes"]["test"]
    assert bayes["ctcvr/auc"] > bayes["click/auc"] > 0.7


def test_census_income_reads_two_labels_and_39_fields(shared_data: Path, tmp_path: Path) -> None:
    from hydra.utils import instantiate

    cfg = compose(
        ["data=census_income", f"paths.data_dir={shared_data}", f"paths.cache_dir={tmp_path}"]
    )
    dm = instantiate(cfg.data)
    dm.setup()
    schema = dm.schema
    assert schema.label_names == ["income", "never_married"]
    assert len(schema.features) == 39 and "instance_weight" not in schema.names
    rows = {s: len(dm.split(s)) for s in ("train", "val", "test")}
    assert sum(rows.values()) == 99762 and rows["val"] == rows["test"] == 9976
    income = dm.split("train").labels["income"].mean()
    assert 0.05 < float(income) < 0.08  # 6,186 of 99,762 rows earn above 50K


def test_model_compile_trains_and_keeps_checkpoint_keys(make_cfg, tmp_path: Path) -> None:
    import torch

    m = train(
        make_cfg("model=lr", "+model.compile=true", "trainer.max_epochs=1", "efficiency=false")
    )
    assert math.isfinite(m["test"]["auc"])
    state = torch.load(tmp_path / "run" / "checkpoints" / "best.ckpt", weights_only=True)
    assert all(not k.startswith("model._orig_mod") for k in state["state_dict"])  # in place


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("+model.dropuot=0.1", "model.dropuot"),
        ("+task.lr=0.1", "task.lr"),  # the learning rate lives in optimizer.lr
        ("+optimizer.nosuch=1", "optimizer.nosuch"),
        ("+scheduler.nosuch=1", "scheduler.nosuch"),
    ],
)
def test_an_argument_the_target_does_not_take_names_its_key(
    make_cfg, override: str, key: str, tmp_path: Path
) -> None:
    cfg = make_cfg("model=deepfm", override)
    with pytest.raises(ConfigError, match=rf"config key '{key}': \w+ takes no argument"):
        train(cfg)
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml")))
def test_every_model_config_gives_only_arguments_its_class_takes(name: str) -> None:
    from ranklab.train import MODEL_PASSED, TASK_PASSED, check_arguments

    cfg = compose([f"model={name}"])
    check_arguments(cfg.model, "model", passed=MODEL_PASSED)
    check_arguments(cfg.task, "task", passed=TASK_PASSED)


def test_rare_positives_warn_with_the_auc_uncertainty() -> None:
    from types import SimpleNamespace

    import torch

    from ranklab.data.schema import LabelSpec
    from ranklab.train import auc_standard_error, rare_label_warnings

    def labels(n: int, pos: int) -> dict:
        y = torch.zeros(n)
        y[:pos] = 1
        return {"click": y}

    splits = {"train": labels(10000, 600), "val": labels(5000, 28), "test": labels(500, 0)}
    dm = SimpleNamespace(labels=lambda s: splits[s])
    schema = SimpleNamespace(labels=(LabelSpec("click"),))
    lines = rare_label_warnings(dm, schema)
    assert len(lines) == 2
    assert lines[0].startswith("the val split has 28 positives of 5,000") and "±0.054" in lines[0]
    assert "task.monitor=val/logloss" in lines[0]
    assert lines[1] == "the test split has only negatives: AUC is undefined for 'click'"
    # the Hanley-McNeil error against a simulation of AUC 0.75 with 28 positives
    rng = np.random.default_rng(0)
    from scipy.stats import norm

    shift = norm.ppf(0.75) * math.sqrt(2)  # binormal: AUC = Phi(shift / sqrt(2))
    aucs = []
    for _ in range(800):
        p, q = rng.normal(shift, 1, 28), rng.normal(0, 1, 4972)
        aucs.append((p[:, None] > q[None, :]).mean())
    assert np.std(aucs) == pytest.approx(auc_standard_error(28, 4972), rel=0.15)


def test_an_auc_monitored_on_a_one_class_val_split_fails_before_training() -> None:
    from types import SimpleNamespace

    import torch

    from ranklab.config import compose
    from ranklab.data.schema import LabelSpec
    from ranklab.train import check_monitor_defined

    splits = {"val": {"click": torch.zeros(100), "buy": torch.tensor([0.0, 1.0] * 50)}}
    dm = SimpleNamespace(labels=lambda s: splits[s])
    schema = SimpleNamespace(labels=(LabelSpec("click"), LabelSpec("buy")))
    for monitor in ("val/auc", "val/click/auc"):
        with pytest.raises(ConfigError, match=r"'task.monitor'.*only negatives for 'click'"):
            check_monitor_defined(compose([f"task.monitor={monitor}"]), dm, schema)
    for monitor in ("val/buy/auc", "val/logloss"):  # defined: goes on
        check_monitor_defined(compose([f"task.monitor={monitor}"]), dm, schema)
