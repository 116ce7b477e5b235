"""Report: run directories -> mean ± std tables, significance, LaTeX, plots, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ranklab.report import aggregate, collect_runs, significance, to_latex, to_markdown
from ranklab.report.cli import main as report_main


def fake_run(root: Path, model: str, seed: int, auc: float) -> None:
    d = root / model / f"seed{seed}"
    d.mkdir(parents=True)
    m = {
        "model": model,
        "data": "toy",
        "seed": seed,
        "test": {"auc": auc, "logloss": 1 - auc},
        "val": {"auc": auc},
        "history": [{"epoch": 0, "auc": auc}],
        "bayes": {"test": {"auc": 0.9}},
    }
    (d / "metrics.json").write_text(json.dumps(m))


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    for s, (a, b) in enumerate([(0.80, 0.70), (0.82, 0.71), (0.81, 0.69)]):
        fake_run(tmp_path, "Good", s, a)
        fake_run(tmp_path, "Base", s, b)
    return tmp_path


def test_aggregate_mean_std_and_tables(runs: Path) -> None:
    df = collect_runs([runs])
    assert df.height == 6 and "test/auc" in df.columns
    t = aggregate(df, ["test/auc", "test/logloss"], by=["model"])
    good = t.filter(t["model"] == "Good").row(0, named=True)
    assert good["n"] == 3
    assert good["test/auc:mean"] == pytest.approx(0.81)
    assert good["test/auc:std"] == pytest.approx(0.01)  # sample std (ddof=1)
    md = to_markdown(t, ["test/auc", "test/logloss"], by=["model"])
    assert "**0.81000 ± 0.01000**" in md  # best AUC in bold
    assert "**0.19000 ± 0.01000**" in md  # lowest log loss in bold
    tex = to_latex(t, ["test/auc"], by=["model"])
    assert r"\textbf{0.81000} $\pm$ 0.01000" in tex and r"\toprule" in tex


def test_paired_significance(runs: Path) -> None:
    df = collect_runs([runs])
    sig = significance(df, "test/auc", "Base", by="model", group=["data"])
    p = dict(zip(sig["model"], sig["p_value"]))
    assert math.isnan(p["Base"]) and p["Good"] < 0.05
    assert set(sig["test"]) == {"-", "paired t"}


def test_cli_writes_files(runs: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    assert report_main([str(runs), "--baseline", "Base", "--out", str(out)]) == 0
    for f in ("table.md", "table.tex", "runs.csv", "summary.csv", "metric.png"):
        assert (out / f).is_file(), f
    assert "Good*" in capsys.readouterr().out
    assert report_main([str(tmp_path / "empty")]) == 2
