"""`make bench` runs end to end (tiny sizes) and reports framework / bare ratios."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_smoke(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "throughput", ROOT / "benchmarks" / "throughput.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
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
            "--overrides",
            *tiny,
        ]
    )
    assert rc == 0
    out = json.loads(next(tmp_path.glob("throughput-*.json")).read_text())
    res = out["suites"]["CTR"]["results"]["deepfm"]
    for key in (
        "framework_train",
        "bare_train_same_module",
        "bare_train_independent",
        "framework_eval",
        "bare_eval_same_module",
        "bare_eval_independent",
    ):
        assert res[key] > 0, key


def test_structure_matched_model_approaches_the_bayes_ceiling() -> None:
    spec = importlib.util.spec_from_file_location("ceiling", ROOT / "benchmarks" / "seq_ceiling.py")
    ceiling = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ceiling)
    small = ["n_train=30000", "n_val=4000", "n_test=4000", "n_users=2000", "n_items=100"]
    test_auc, bayes = ceiling.main([*small, "--epochs", "6", "--batch-size", "256"])
    # the model has the generator's form, so it gets close to the ceiling but never above it
    # by more than sampling noise of 4000 test rows
    assert bayes - 0.03 < test_auc < bayes + 0.01
