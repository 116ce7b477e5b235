"""Report: run directories -> one row per experiment, mean ± std, tests, LaTeX, plots, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest
from matplotlib.figure import Figure
from scipy import stats

from ranklab.errors import ConfigError
from ranklab.report import (
    aggregate,
    bar_plot,
    collect_runs,
    holm,
    load_runs,
    significance,
    to_latex,
    to_markdown,
)
from ranklab.report.cli import main as report_main


def fake_run(
    root: Path,
    model: str,
    seed: int,
    auc: float,
    config: dict | None = None,
    name: str | None = None,
    **extra,
) -> Path:
    """A metrics.json as train() writes it (the experiment hash derived from the config)."""
    from ranklab.utils import hash_object

    config = config or {"model": {"_target_": model, "dropout": 0.0}}
    d = root / (name or model) / f"seed{seed}"
    d.mkdir(parents=True)
    m = {
        "model": model,
        "data": "toy",
        "seed": seed,
        "test": {"auc": auc, "logloss": 1 - auc},
        "val": {"auc": auc},
        "history": [{"epoch": 0, "auc": auc}],
        "bayes": {"test": {"auc": 0.9}},
        "config": {**config, "seed": seed},
        "experiment_hash": hash_object({**config, "seed": 0})[:16],
        **extra,
    }
    (d / "metrics.json").write_text(json.dumps(m))
    return d


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    for s, (a, b) in enumerate([(0.80, 0.70), (0.82, 0.71), (0.81, 0.69)]):
        fake_run(tmp_path, "Good", s, a)
        fake_run(tmp_path, "Base", s, b)
    return tmp_path


def test_aggregate_mean_std_and_tables(runs: Path) -> None:
    df = collect_runs([runs])
    assert df.height == 6 and "test/auc" in df.columns
    t = aggregate(df, ["test/auc", "test/logloss"])
    good = t.filter(t["label"] == "Good").row(0, named=True)
    assert good["n"] == 3
    assert good["test/auc:mean"] == pytest.approx(0.81)
    assert good["test/auc:std"] == pytest.approx(0.01)  # sample std (ddof=1)
    md = to_markdown(t, ["test/auc", "test/logloss"])
    assert "| data | model | n | test/auc | test/logloss |" in md
    assert "**0.81000** ± 0.01000" in md  # best AUC in bold
    assert "<ins>0.70000</ins> ± 0.01000" in md  # second best underlined
    assert "**0.19000** ± 0.01000" in md  # lowest log loss in bold
    tex = to_latex(t, ["test/auc"])
    assert r"\textbf{0.81000} $\pm$ 0.01000" in tex and r"\underline{0.70000}" in tex
    assert r"\toprule" in tex


def test_paired_significance_on_every_metric(runs: Path) -> None:
    df = collect_runs([runs])
    sig = significance(df, ["test/auc", "test/logloss"], "Base")
    assert sig.height == 4  # 2 rows x 2 metrics
    good = {r["metric"]: r for r in sig.iter_rows(named=True) if r["label"] == "Good"}
    a, b = [0.70, 0.71, 0.69], [0.80, 0.82, 0.81]
    assert good["test/auc"]["p_value"] == pytest.approx(stats.ttest_rel(b, a).pvalue)
    assert good["test/logloss"]["p_value"] == pytest.approx(good["test/auc"]["p_value"])
    assert set(sig["test"]) == {"-", "paired t"}
    base = sig.filter(sig["label"] == "Base")
    assert all(math.isnan(p) for p in base["p_value"])


def test_holm_matches_a_hand_computed_family() -> None:
    # p sorted: 0.01 (x4 = 0.04), 0.02 (x3 = 0.06), 0.03 (x2 = 0.06, monotone), 0.04 (x1)
    assert holm([0.03, 0.01, 0.04, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    out = holm([0.5, math.nan, 0.01])
    assert out[0] == pytest.approx(0.5) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)


def test_rows_are_experiments_labelled_by_the_keys_that_differ(tmp_path: Path) -> None:
    for s in (1, 2):
        fake_run(tmp_path, "DeepFM", s, 0.80 + s / 100)
        fake_run(
            tmp_path,
            "DeepFM",
            s,
            0.70,
            {"model": {"_target_": "DeepFM", "dropout": 0.1}},
            name="drop",
        )
    df = collect_runs([tmp_path])
    t = aggregate(df, ["test/auc"])
    assert t.height == 2 and t["n"].to_list() == [2, 2]
    assert set(t["label"]) == {"DeepFM (model.dropout=0.0)", "DeepFM (model.dropout=0.1)"}


def test_duplicates_count_once_smoke_runs_never(tmp_path: Path) -> None:
    fake_run(tmp_path, "LR", 1, 0.7)
    fake_run(tmp_path, "LR", 1, 0.7, name="again")  # same experiment and seed, another folder
    fake_run(tmp_path, "LR", 2, 0.9, name="smoke", smoke=True)
    runs = load_runs([tmp_path])
    assert runs.df.height == 1
    assert any("2 runs of the same experiment and seed, counted once" in n for n in runs.notes)
    assert any("left out 1 smoke run" in n for n in runs.notes)
    assert load_runs([tmp_path], include_smoke=True).df.height == 2


def test_runs_on_other_data_or_weights_are_other_rows(tmp_path: Path) -> None:
    """The config hash leaves the data's paths out and takes init_from as typed: the data's
    fingerprint and the warm start's source tell such runs apart, whatever their folders."""
    for s in (1, 2):
        fake_run(tmp_path, "LR", s, 0.80 + s / 100, name="d1", data_fingerprint="a" * 16)
        fake_run(tmp_path, "LR", s + 2, 0.60 + s / 100, name="d2", data_fingerprint="b" * 16)
    runs = load_runs([tmp_path])
    t = aggregate(runs.df, ["test/auc"])
    assert t["label"].to_list() == [
        "LR (data_fingerprint=aaaaaaaaaaaa)",
        "LR (data_fingerprint=bbbbbbbbbbbb)",
    ]
    assert t["n"].to_list() == [2, 2] and t["test/auc:mean"].to_list() == pytest.approx(
        [0.815, 0.615]
    )
    # and rows of other models on other data are not compared without a word
    fake_run(tmp_path, "DNN", 1, 0.7, name="dnn", data_fingerprint="c" * 16)
    notes = [n for n in load_runs([tmp_path]).notes if "read other data" in n]
    assert notes == [
        "data 'toy': the same data config read other data in some runs (data_fingerprint "
        "aaaaaaaaaaaa: LR (data_fingerprint=aaaaaaaaaaaa); bbbbbbbbbbbb: LR "
        "(data_fingerprint=bbbbbbbbbbbb); cccccccccccc: DNN): the files changed between runs"
    ]
    # one seed on both data: two rows, not a duplicate counted once
    fake_run(tmp_path, "LR", 1, 0.5, name="d3", data_fingerprint="b" * 16)
    runs = load_runs([tmp_path])
    assert runs.df.height == 6 and not any("counted once" in n for n in runs.notes)
    # warm starts from two sources (the same init_from path typed, another file behind it)
    w = tmp_path / "warm"
    for s, src in ((1, "c1"), (2, "c1"), (3, "c2")):
        fake_run(w, "DNN", s, 0.7, initialized_from={"path": "/x/best.ckpt", "config_hash": src})
    t = aggregate(load_runs([w]).df, ["test/auc"])
    assert t["label"].to_list() == [
        "DNN (init_from.config_hash=c1)",
        "DNN (init_from.config_hash=c2)",
    ] and t["n"].to_list() == [2, 1]


def test_a_row_names_the_code_versions_and_environments_it_pools(tmp_path: Path) -> None:
    env = {"torch": "2.13.0", "device": "cpu"}
    fake_run(tmp_path, "LR", 1, 0.8, git_commit="a" * 40, environment={**env, "threads": 2})
    fake_run(tmp_path, "LR", 2, 0.8, git_commit="a" * 40, environment={**env, "threads": 2})
    fake_run(
        tmp_path, "LR", 3, 0.8, git_commit="b" * 40 + "-dirty", environment={**env, "threads": 1}
    )
    runs = load_runs([tmp_path])
    assert runs.df.height == 3  # one row: the same experiment on the same data
    assert runs.notes == [
        "LR: its runs come from 2 code versions (code aaaaaaaaaa: seeds 1, 2; code "
        "bbbbbbbbbb-dirty: seed 3)",
        "LR: its runs come from 2 threads values (threads 2: seeds 1, 2; threads 1: seed 3)",
    ]
    # the same seed twice with other digits: the note says what differs between the two
    fake_run(
        tmp_path,
        "LR",
        1,
        0.81,
        name="again",
        git_commit="a" * 40,
        environment={**env, "threads": 8},
    )
    note = next(n for n in load_runs([tmp_path]).notes if "counted once" in n)
    assert note.endswith("their metrics differ (test/auc: 0.8 vs 0.81): they differ in threads")


def test_labels_leave_out_keys_derived_from_the_seed(tmp_path: Path) -> None:
    def run(root: Path, drop: float, seed: int, **extra) -> None:
        # data.seed: ${seed}: it differs between the runs of one experiment
        config = {"model": {"_target_": "LR", "dropout": drop}, "data": {"seed": seed}}
        exp = f"{drop:<16}"
        fake_run(root, "LR", seed, 0.8, config, name=f"lr{drop}", experiment_hash=exp, **extra)

    run(tmp_path / "a", 0.0, 1)
    run(tmp_path / "a", 0.0, 2)  # seen to vary between the runs of an experiment
    run(tmp_path / "a", 0.1, 3)
    labels = ["LR (model.dropout=0.0)", "LR (model.dropout=0.1)"]
    assert aggregate(collect_runs([tmp_path / "a"]), ["test/auc"])["label"].to_list() == labels
    run(tmp_path / "b", 0.0, 1)  # one run each: unseen, so without the runs' record...
    run(tmp_path / "b", 0.1, 2)
    t = aggregate(collect_runs([tmp_path / "b"]), ["test/auc"])
    assert t["label"].to_list()[0] == "LR (data.seed=1, model.dropout=0.0)"
    run(tmp_path / "c", 0.0, 1, seeded_keys=["data.seed"])  # ...and with it, as train writes
    run(tmp_path / "c", 0.1, 2, seeded_keys=["data.seed"])
    assert aggregate(collect_runs([tmp_path / "c"]), ["test/auc"])["label"].to_list() == labels


def test_data_made_from_the_seed_is_one_experiment_apart_from_fixed_data(tmp_path: Path) -> None:
    """data.source.seed=${seed} (fresh data for every seed) against the default
    data.source.seed=0: the seed-free configs are equal, so the experiment hash takes which keys
    follow the seed; the seeded data's fingerprints differ by seed, as they should: no split,
    no note that the files changed."""
    from ranklab.config import compose, config_hash

    fixed = compose(["data.source.n_train=100"])
    fresh = compose(["data.source.n_train=100", "data.source.seed=${seed}"])
    assert config_hash(fixed, ignore_seed=True) != config_hash(fresh, ignore_seed=True)
    for seed in (1, 2):  # a seed's own data is not another experiment
        fresh.seed = seed
        assert config_hash(fresh, ignore_seed=True) == config_hash(
            compose(["data.source.n_train=100", "data.source.seed=${seed}"]), ignore_seed=True
        )
    # the shipped configs' own seeded key (data.seed) adds nothing: earlier runs keep their hash
    plain = config_hash(fixed, ignore_seed=True)
    from ranklab.config import result_config
    from ranklab.utils import hash_object

    assert plain == hash_object(result_config(fixed, ignore_seed=True))[:16]

    for seed in (1, 2):
        data = {"seed": seed, "source": {"seed": 0}}
        fake_run(
            tmp_path,
            "LR",
            seed,
            0.8,
            {"data": data},
            name="fixed",
            experiment_hash="f",
            data_fingerprint="a" * 16,
            seeded_keys=["data.seed"],
        )
        data = {"seed": seed, "source": {"seed": seed}}
        fake_run(
            tmp_path,
            "LR",
            seed,
            0.7,
            {"data": data},
            name="fresh",
            experiment_hash="s",
            data_fingerprint=str(seed) * 16,
            seeded_keys=["data.seed", "data.source.seed"],
        )
    runs = load_runs([tmp_path])
    t = aggregate(runs.df, ["test/auc"])
    assert sorted(zip(t["label"].to_list(), t["n"].to_list())) == [
        ("LR (data.source.seed=${seed})", 2),
        ("LR (data.source.seed=0)", 2),
    ]
    assert not any("read other data" in n for n in runs.notes), runs.notes


def test_a_metric_some_runs_lack_is_noted_and_pairs_need_each_seed_once(tmp_path: Path) -> None:
    from ranklab.report import missing_notes

    for s in (1, 2, 3):
        fake_run(tmp_path, "Base", s, 0.7 + s / 100)
    fake_run(tmp_path, "Other", 1, 0.8)
    fake_run(tmp_path, "Other", 2, 0.82)
    d = fake_run(tmp_path, "Other", 3, 0.5)
    m = json.loads((d / "metrics.json").read_text())
    m["test"]["auc"] = None  # undefined (one class), as metrics.json writes it
    (d / "metrics.json").write_text(json.dumps(m))
    df = collect_runs([tmp_path])
    assert missing_notes(df, ["test/auc", "test/logloss"]) == [
        "'toy | Other': test/auc has no value in 1 of its 3 runs (seed 3); its mean and std "
        "are over the other 2"
    ]
    # a row pooling two experiments holds seed 1 twice: no pairs, Welch's test
    fake_run(tmp_path, "Base", 1, 0.75, {"model": {"_target_": "Base", "dropout": 0.5}}, name="b2")
    df = collect_runs([tmp_path]).with_columns(label=pl.col("model"))
    sig = (
        significance(df, ["test/logloss"], "Base")
        .filter(pl.col("label") == "Other")
        .row(0, named=True)
    )
    base = df.filter(pl.col("model") == "Base")["test/logloss"].to_list()
    other = df.filter(pl.col("model") == "Other")["test/logloss"].to_list()
    assert sig["test"] == "Welch t"
    assert sig["p_value"] == pytest.approx(stats.ttest_ind(other, base, equal_var=False).pvalue)


def test_cli_writes_files_and_names_the_test(runs: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    args = [str(runs), "--baseline", "Base", "--relaimpr", "--out", str(out)]
    assert report_main(args) == 0
    for f in ("table.md", "table.tex", "runs.csv", "summary.csv", "metric.png"):
        assert (out / f).is_file(), f
    printed = capsys.readouterr().out
    assert "**0.81000** ± 0.01000*" in printed  # significant on test/auc
    assert "paired t-test over shared seeds" in printed
    # RelaImpr (DIN paper): (0.81 - 0.5) / (0.70 - 0.5) - 1 = +55%
    assert "+55.00%" in printed
    summary = (out / "summary.csv").read_text().splitlines()[0]
    assert "test/auc:p" in summary and "test/logloss:p" in summary
    assert report_main([str(tmp_path / "empty")]) == 2
    # --by model: the whole table is one group to test in (it was a traceback)
    assert report_main([str(runs), "--by", "model", "--baseline", "Base"]) == 0
    assert "**0.81000** ± 0.01000*" in capsys.readouterr().out
    (tmp_path / "a_file.md").write_text("mine")
    assert report_main([str(runs), "--out", str(tmp_path / "a_file.md")]) == 2
    assert "is a file: give a folder" in capsys.readouterr().err
    assert (tmp_path / "a_file.md").read_text() == "mine"


def test_cli_welch_holm_and_pooling_say_what_they_did(tmp_path: Path, capsys) -> None:
    for s in (1, 2, 3):
        fake_run(tmp_path, "Base", s, 0.70 + s / 1000)
        fake_run(tmp_path, "Other", s + 10, 0.80 + s / 1000)  # other seeds: Welch's test
        fake_run(
            tmp_path, "Other", s, 0.75, {"model": {"_target_": "Other", "dropout": 0.3}}, name="o3"
        )
    assert report_main([str(tmp_path), "--baseline", "Base", "--holm"]) == 0
    printed = capsys.readouterr().out
    assert (
        "Welch's t-test (the seeds are not shared one to one) for Other (model.dropout=0.0)"
        in printed
    )
    assert "Holm-corrected over the table's 4 comparisons" in printed
    assert report_main([str(tmp_path), "--by", "data", "model"]) == 0
    printed = capsys.readouterr().out
    assert "| toy | Other | 6 |" in printed
    assert "pooled in 'toy | Other': 2 experiments, 6 runs, differing in model.dropout" in printed
    assert report_main([str(tmp_path), "--baseline", "Other"]) == 2  # two rows: name one
    assert "names 2 rows" in capsys.readouterr().err


def test_plots_return_figures_and_save_only_when_asked(runs: Path, tmp_path: Path) -> None:
    import matplotlib

    backend = matplotlib.get_backend()
    t = aggregate(collect_runs([runs]), ["test/auc"])
    fig = bar_plot(t, "test/auc")
    assert isinstance(fig, Figure) and not list(tmp_path.glob("*.png"))
    bar_plot(t, "test/auc", path=tmp_path / "bars.png")
    assert (tmp_path / "bars.png").read_bytes().startswith(b"\x89PNG")
    assert matplotlib.get_backend() == backend  # importing and plotting left it alone


def test_importing_ranklab_changes_no_matplotlib_backend() -> None:
    import subprocess
    import sys

    code = (
        "import matplotlib; matplotlib.use('svg'); import ranklab.report, ranklab.study; "
        "print(matplotlib.get_backend())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "svg"


def test_baseline_that_names_nothing_is_refused(runs: Path) -> None:
    from ranklab.report import resolve_baseline

    with pytest.raises(ConfigError, match="no row 'Nope'"):
        resolve_baseline(collect_runs([runs]), "Nope")


def test_runs_that_did_not_finish_are_left_out_with_a_note(tmp_path: Path) -> None:
    fake_run(tmp_path, "Good", 0, 0.8, status="finished")
    d = tmp_path / "Bad" / "seed0"
    d.mkdir(parents=True)  # a diverged run's metrics.json: no data, no test results
    (d / "metrics.json").write_text(
        json.dumps({"status": "diverged", "model": "Bad", "seed": 0, "val": {}, "test": {}})
    )
    stopped = tmp_path / "Stopped" / "seed0"  # Ctrl-C or a kill: no metrics.json at all
    stopped.mkdir(parents=True)
    (stopped / "status.json").write_text(json.dumps({"status": "interrupted"}))
    runs = load_runs([tmp_path])
    assert runs.df["label"].to_list() == ["Good"]
    assert any("did not finish" in n and "diverged" in n and str(d) in n for n in runs.notes)
    assert any(f"{stopped} (interrupted)" in n for n in runs.notes)


def test_costs_are_best_when_lowest(tmp_path: Path) -> None:
    for model, ms, params in (("Small", 0.1, 10), ("Big", 0.4, 1000)):
        fake_run(
            tmp_path,
            model,
            0,
            0.8,
            efficiency={"latency_ms_batch1": {"p50": ms}, "peak_rss_mb": params},
            n_params=params,
        )
    t = aggregate(collect_runs([tmp_path]), ["efficiency/latency_ms_batch1/p50", "n_params"])
    md = to_markdown(t, ["efficiency/latency_ms_batch1/p50", "n_params"])
    small = next(line for line in md.splitlines() if "Small" in line)
    assert "**0.100**" in small and "**10**" in small  # (counts whole, costs to 3 decimals)


def test_the_cli_shows_the_costs_the_runs_measured(tmp_path: Path, capsys) -> None:
    for model, ms, params in (("Small", 0.1, 10), ("Big", 0.4, 1000)):
        for seed in (0, 1):
            fake_run(
                tmp_path,
                model,
                seed,
                0.8 + seed / 100,
                efficiency={"latency_ms_batch4096": {"p50": ms}, "peak_rss_mb": 500.0},
                n_params=params,
            )
    assert report_main([str(tmp_path), "--baseline", "Small"]) == 0
    out = capsys.readouterr().out
    head = next(line for line in out.splitlines() if "test/auc" in line)
    # after the metrics; no run measured the GPU, so no column for it
    assert head.split("|")[-4:-1] == [
        " n_params ",
        " efficiency/peak_rss_mb ",
        " efficiency/latency_ms_batch4096/p50 ",
    ], head
    small = next(line for line in out.splitlines() if line.startswith("| toy | Small"))
    assert "**10** ± 0" in small and "**0.100** ± 0.000" in small
    assert "*" not in small.replace("**", "")  # costs are not tested for significance
    assert report_main([str(tmp_path), "--costs"]) == 0
    assert "n_params" not in capsys.readouterr().out
    assert report_main([str(tmp_path), "--costs", "efficiency/nope"]) == 2
    assert "unknown cost column(s) ['efficiency/nope']" in capsys.readouterr().err


def test_stars_and_best_marks_are_decided_within_each_data_set(tmp_path: Path, capsys) -> None:
    """Two data sets in one table: each row's star is its p-value against the baseline on its
    own data (the last data set's p-value was shown on every data set's row), and models are
    ranked against those on the same data only."""
    for s in (1, 2, 3):
        for data, base, good in (("toy", 0.70, 0.60), ("other", 0.60, 0.90)):
            jitter = s / 1000 if data == "toy" else (-1) ** s / 1000
            for model, auc in (("Base", base), ("Good", good + jitter)):
                config = {"model": {"_target_": model}, "data": {"name": data}}
                fake_run(tmp_path / data, model, s, auc, config, data=data)
    out = tmp_path / "rep"
    assert report_main([str(tmp_path), "--baseline", "Base", "--out", str(out)]) == 0
    rows = {
        (line.split("|")[1].strip(), line.split("|")[2].strip()): line
        for line in (out / "table.md").read_text().splitlines()
        if line.startswith("| toy") or line.startswith("| other")
    }
    summary = pl.read_csv(out / "summary.csv")
    p = {(r["data"], r["label"]): r["test/auc:p"] for r in summary.iter_rows(named=True)}
    assert p[("toy", "Good")] < 0.05 and p[("other", "Good")] < 0.05
    assert "<ins>0.60200</ins> ± 0.00100* |" in rows[("toy", "Good")]
    assert "**0.89967** ± 0.00115* |" in rows[("other", "Good")]
    # toy: Base (0.70) is best; other: Good (0.90) is
    assert "**0.70000**" in rows[("toy", "Base")] and "<ins>" in rows[("toy", "Good")]
    assert "**0.89967**" in rows[("other", "Good")] and "<ins>" in rows[("other", "Base")]


def test_calibration_is_best_nearest_one_and_errors_lowest(tmp_path: Path) -> None:
    from ranklab.report.tables import lower_is_better

    for model, cal, mse in (("Over", 1.6, 0.3), ("Near", 1.05, 0.1), ("Under", 0.9, 0.2)):
        fake_run(tmp_path, model, 0, 0.8, test={"auc": 0.8, "calibration": cal, "mse": mse})
    metrics = ["test/calibration", "test/mse"]
    md = to_markdown(aggregate(collect_runs([tmp_path]), metrics), metrics)
    near = next(line for line in md.splitlines() if "Near" in line)
    under = next(line for line in md.splitlines() if "Under" in line)
    assert "**1.05000**" in near and "**0.10000**" in near
    assert "<ins>0.90000</ins>" in under and "<ins>0.20000</ins>" in under
    assert lower_is_better("test/dwell/mae") and lower_is_better("val/mse")
    assert not lower_is_better("test/auc") and not lower_is_better("test/ndcg@10")
