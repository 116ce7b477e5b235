"""Studies: a declared grid of runs over seeds, resumable, tabulated; the shipped studies parse."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from ranklab.config import compose
from ranklab.errors import ConfigError
from ranklab.study import ROOT, load_study, main, run_study
from ranklab.train import check_config


def test_study_runs_tabulates_and_resumes(tmp_path: Path, tiny_overrides: list[str]) -> None:
    spec_path = tmp_path / "toy.yaml"
    base = [*tiny_overrides, f"paths.cache_dir={tmp_path}/cache", "threads=1"]
    spec_path.write_text(
        yaml.safe_dump(
            {
                "name": "toy",
                "base": base,
                "seeds": [1, 2],
                "baseline": "lr",
                "variants": {"lr": ["model=lr"], "fm": ["model=fm", "model.embedding_dim=4"]},
                "metrics": ["test/auc", "gap_to_bayes"],
            }
        )
    )
    out = tmp_path / "out"
    md = run_study(load_study(spec_path), out, tmp_path)
    assert "| lr | LR | 2 |" in md and re.search(r"\| fm\*? \| FM \| 2 \|", md) and " ± " in md
    for f in ("table.md", "table.tex", "runs.csv", "summary.csv", "plot.png"):
        assert (out / f).is_file()
    stamp = (out / "fm" / "seed2" / "metrics.json").stat().st_mtime_ns
    run_study(load_study(spec_path), out, tmp_path, variants=["fm"])  # finished: not retrained
    assert (out / "fm" / "seed2" / "metrics.json").stat().st_mtime_ns == stamp
    # the file edited since: its finished runs are another config's, never trained over
    spec = load_study(spec_path)
    spec["variants"]["fm"] = ["model=fm", "model.embedding_dim=8"]
    with pytest.raises(
        ConfigError,
        match=r"'--out'.*fm/seed1 holds a run of another config \(finished; "
        r"model.embedding_dim: 8 here, 4 there\): the study changed since it ran",
    ):
        run_study(spec, out, tmp_path)
    assert (out / "fm" / "seed2" / "metrics.json").stat().st_mtime_ns == stamp
    # tabulated as it is now: the runs of the old fm are left out, not pooled under its name
    md = run_study(spec, out, tmp_path, train=False)
    assert "| lr | LR | 2 |" in md and "| FM |" not in md
    assert f"note: left out {out / 'fm' / 'seed1'}: a run of another config" in md
    # a run whose data changed since (its fingerprint) is a row of its own, named so
    held = out / "lr" / "seed2" / "metrics.json"
    m = json.loads(held.read_text())
    held.write_text(json.dumps({**m, "data_fingerprint": "0123456789abcdef"}))
    md = run_study(load_study(spec_path), out, tmp_path, train=False)
    assert "| lr (data_fingerprint=0123456789ab) | LR | 1 |" in md
    assert "note: nothing is tested against the baseline 'lr': its runs are 2 rows" in md
    assert re.search(
        r"\| lr \(data_fingerprint=[0-9a-f]{12}\) \| LR \| 1 \|", md.replace("0123456789ab", "")
    )


def test_study_file_errors_name_the_key(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("variants: {a: [model=lr]}\nseeds: [1]\nmetrics: [test/auc]\nseed: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: seed"):
        load_study(p)
    p.write_text("variants: {}\nseeds: [1]\nmetrics: [test/auc]\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: variants"):
        load_study(p)
    assert main([str(tmp_path / "missing.yaml")]) == 2
    # shapes and a baseline that is no variant: one line before any run (they were a
    # TypeError, a variant read letter by letter, and a table with nothing tested)
    good = "variants: {lr: [model=lr], fm: [model=fm]}\nseeds: [1, 2]\nmetrics: [test/auc]\n"
    for text, message in (
        (good.replace("[1, 2]", "1"), r"bad\.yaml: seeds': must be a list of seeds"),
        (good.replace("[model=lr]", "model=lr"), r"bad\.yaml: variants\.lr': must be a list"),
        (good + "baseline: lrr\n", r"bad\.yaml: baseline': 'lrr' is not a variant \(did you"),
        ("variants: [a\nseeds: 1\n", r"bad\.yaml, line 2, column 6: not YAML \(expected"),
    ):
        p.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_study(p)


@pytest.mark.parametrize(
    ("variant", "message"),
    [
        ("[model=lrr]", "config key 'model': no option 'lrr' in conf/model/ (did you mean 'lr'?)"),
        ("[model=lr, +sede=3]", "config key 'sede': is not a key of ranklab's config"),
    ],
)
def test_a_variant_that_does_not_compose_fails_before_any_run(
    tmp_path: Path, capsys, variant: str, message: str
) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(f"variants: {{a: [model=fm], b: {variant}}}\nseeds: [1]\nmetrics: [test/auc]\n")
    assert main([str(p), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {message}") and "(in variant 'b': " in err, err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()  # nothing trained, not even variant a


@pytest.mark.parametrize(
    "path", sorted((ROOT / "experiments").glob("*.yaml")), ids=lambda p: p.stem
)
def test_shipped_studies_compose(path: Path, tmp_path: Path) -> None:
    spec = load_study(path)
    for overrides in spec["variants"].values():
        base = [o.replace("${data_dir}", str(tmp_path)) for o in spec["base"]]
        check_config(compose([*base, *overrides]))  # every variant is a valid config


def test_variant_labels_follow_their_runs(tmp_path: Path, tiny_overrides: list[str]) -> None:
    spec_path = tmp_path / "toy.yaml"
    base = [
        *tiny_overrides,
        f"paths.cache_dir={tmp_path}/cache",
        "threads=1",
        "trainer.max_epochs=1",
    ]
    spec = {
        "name": "toy",
        "base": base,
        "seeds": [1],
        "metrics": ["test/auc"],
        "variants": {"zeta": ["model=lr"], "alpha": ["model=fm", "model.embedding_dim=4"]},
    }
    spec_path.write_text(
        yaml.safe_dump(spec, sort_keys=False)
    )  # grid order differs from name order
    md = run_study(load_study(spec_path), tmp_path / "out", tmp_path)
    assert "| zeta | LR | 1 |" in md and "| alpha | FM | 1 |" in md
    assert md.index("| zeta |") < md.index("| alpha |")  # rows in the study's order


def test_table_only_tabulates_without_training(tmp_path: Path, tiny_overrides: list[str]) -> None:
    spec_path = tmp_path / "toy.yaml"
    base = [*tiny_overrides, f"paths.cache_dir={tmp_path}/cache", "threads=1"]
    spec_path.write_text(
        yaml.safe_dump(
            {
                "name": "toy",
                "base": base,
                "seeds": [1],
                "variants": {"lr": ["model=lr"]},
                "metrics": ["test/auc"],
            }
        )
    )
    with pytest.raises(ConfigError, match="no finished runs"):
        run_study(load_study(spec_path), tmp_path / "out", tmp_path, train=False)
    run_study(load_study(spec_path), tmp_path / "out", tmp_path)
    md = run_study(load_study(spec_path), tmp_path / "out", tmp_path, train=False)
    assert "| lr | LR | 1 |" in md
    # a baseline left out by --variants: said so (it said "fewer than 2 seeds on a side")
    spec = load_study(spec_path)
    spec = {**spec, "variants": {**spec["variants"], "fm": ["model=fm"]}, "baseline": "fm"}
    md = run_study(spec, tmp_path / "out", tmp_path, variants=["lr"], train=False)
    assert "nothing is tested against the baseline 'fm': it has no finished run" in md
    # a metric no run reports is named (it was dropped from the table without a word)
    typo = {**load_study(spec_path), "metrics": ["test/auc", "test/loglos"]}
    with pytest.raises(
        ConfigError, match=r"no run reports 'test/loglos' \(did you mean 'test/logl"
    ):
        run_study(typo, tmp_path / "out", tmp_path, train=False)
    with pytest.raises(ConfigError, match=r"'by': the runs have no column 'modle'"):
        run_study({**load_study(spec_path), "by": "modle"}, tmp_path / "out", tmp_path, train=False)


def test_an_interrupted_study_run_continues_from_its_checkpoint(
    tmp_path: Path, tiny_overrides: list[str], monkeypatch
) -> None:
    import json
    import signal
    import sys

    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # tests/faults.py
    fault = [
        "+callbacks.fault._target_=faults.SignalAt",
        "+callbacks.fault.epoch=1",
        "+callbacks.fault.batch=3",
        f"+callbacks.fault.signum={int(signal.SIGTERM)}",
        f"+callbacks.fault.marker={tmp_path}/sent",
    ]
    spec = {
        "name": "toy",
        "base": [*tiny_overrides, f"paths.cache_dir={tmp_path}/cache", "threads=1", *fault],
        "seeds": [1],
        "variants": {"lr": ["model=lr"]},
        "metrics": ["test/auc"],
        "by": "variant",
        "digits": 5,
    }
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stopped:  # SIGTERM: checkpoint, then 128 + 15
        run_study(spec, out, tmp_path)
    assert stopped.value.code == 128 + signal.SIGTERM
    run = out / "lr" / "seed1"
    assert json.loads((run / "status.json").read_text())["status"] == "interrupted"
    run_study(spec, out, tmp_path)  # the same study again: the run continues
    m = json.loads((run / "metrics.json").read_text())
    assert m["status"] == "finished" and m["resumed_from"] == str(run / "checkpoints" / "last.ckpt")
    assert sys.modules.get("faults") is not None


def test_a_diverged_run_is_left_out_and_the_others_still_run(
    tmp_path: Path, tiny_overrides: list[str], capsys
) -> None:
    """A variant whose run diverges (lr 1e20): the study stopped there (exit 2), the variants
    after it untrained, and a rerun tabulated the diverged run as done. Now the others train,
    the table leaves it out with a note, the study exits 2, and a rerun does not train it again."""
    spec_path = tmp_path / "div.yaml"
    base = [*tiny_overrides, f"paths.cache_dir={tmp_path}/cache", "threads=1", "model=deepfm"]
    spec = {
        "name": "div",
        "base": base,
        "seeds": [1],
        "variants": {"bad": ["optimizer.lr=1e20"], "good": []},
        "metrics": ["test/auc"],
    }
    spec_path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    args = [str(spec_path), "--data-dir", str(tmp_path), "--out", str(out)]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert "1 run(s) diverged: bad seed 1" in captured.err
    md = (out / "table.md").read_text()
    assert "| good | DeepFM | 1 |" in md and "| bad |" not in md
    assert f"note: left out {out / 'bad' / 'seed1'}: it diverged (training loss is" in md
    stamp = (out / "bad" / "seed1" / "metrics.json").stat().st_mtime_ns
    assert main(args) == 2
    assert "bad seed 1: diverged (" in capsys.readouterr().out
    assert (out / "bad" / "seed1" / "metrics.json").stat().st_mtime_ns == stamp
    assert main([*args, "--variants", "bad"]) == 2  # nothing else: no table, and says why
    assert "every run diverged: bad seed 1; no table written" in capsys.readouterr().err
