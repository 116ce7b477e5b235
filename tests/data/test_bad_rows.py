"""``on_bad_rows: skip``: every malformed row is dropped and counted, the first few named with
their file's own line (also after earlier lines were dropped, with or without a header), the
rest encoded exactly as the same file without those lines; the count reaches metrics.json.
``fail`` (the default) stops at the first one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ranklab.data import CSVSplits
from ranklab.data.dataset import load_or_build
from ranklab.errors import ConfigError, DataError

FEATURES = {"categorical": ["ad", "site"], "numeric": [{"name": "price", "transform": "log"}]}
# data row (0-based) -> the malformed line written there, and why it is malformed
BAD = {
    3: ("1,a1,s1", "expected 4 fields, found 3"),
    40: ("3,a2,s1,1.5", "label must be 0 or 1, found '3'"),
    41: ("1,a1,s2,1.5,9", "expected 4 fields, found 5"),
    60: ('1,"a1, x",2.5', "expected 4 fields, found 3"),  # a quoted comma: one field
    77: ("0,a3,s1,abc", "numeric feature 'price' cannot parse 'abc'"),
    150: ("1,a1,s1,inf", "numeric feature 'price' is not finite ('inf')"),
    151: ("x,a1,s1,2", "label must be 0 or 1, found 'x'"),
    200: ("", "a blank line, where 4 fields are expected"),  # polars: a row of nulls
}


def _rows(n: int = 400, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [
        f"{rng.integers(0, 2)},a{rng.integers(0, 9)},s{rng.integers(0, 4)},{rng.uniform(0, 50):.2f}"
        for _ in range(n)
    ]


def _write(d: Path, header: bool) -> tuple[Path, Path]:
    """The file with malformed rows, and the same file without them."""
    rows = _rows()
    head = ["click,ad,site,price"] if header else []
    dirty = [BAD[i][0] if i in BAD else r for i, r in enumerate(rows)]
    clean = [r for i, r in enumerate(rows) if i not in BAD]
    d.mkdir(parents=True, exist_ok=True)
    (d / "dirty.csv").write_text("\n".join(head + dirty) + "\n")
    (d / "clean.csv").write_text("\n".join(head + clean) + "\n")
    return d / "dirty.csv", d / "clean.csv"


def _source(path: Path, header: bool, **kw) -> CSVSplits:
    options = {} if header else {"has_header": False, "columns": ["click", "ad", "site", "price"]}
    return CSVSplits(
        dir=str(path.parent),
        files={"all": path.name},
        split={"method": "random", "seed": 1},
        label="click",
        features=FEATURES,
        read_options=options,
        **kw,
    )


@pytest.mark.parametrize("header", [True, False], ids=["header", "no-header"])
@pytest.mark.parametrize("budget", [None, 1 << 20], ids=["in-memory", "streamed"])
def test_skip_drops_counts_and_names_every_malformed_row(
    tmp_path: Path, header: bool, budget: int | None, caplog: pytest.LogCaptureFixture
) -> None:
    dirty, clean = _write(tmp_path / "d", header)
    with pytest.raises(DataError) as first:  # fail (the default): the first malformed line
        load_or_build(_source(dirty, header), tmp_path / "c0", memory_budget=budget)
    assert first.value.line == 3 + 1 + header and "expected 4 fields" in str(first.value)

    with caplog.at_level("WARNING", logger="ranklab"):
        skipped = load_or_build(
            _source(dirty, header, on_bad_rows="skip"), tmp_path / "c1", memory_budget=budget
        )
    assert caplog.text.count("malformed rows") == 1  # once, however many passes streaming makes
    report = skipped.meta["bad_rows"][str(dirty)]
    assert report["skipped"] == len(BAD)
    shown = sorted(BAD)[: len(report["examples"])]
    assert len(report["examples"]) == 5
    # every example names its own line in the dirty file (rows dropped before it do not
    # shift it), in file order within each kind of check
    in_order = [int(e.split(", line ")[1].split(":")[0].split(",")[0]) for e in report["examples"]]
    assert in_order == sorted(in_order)  # in line order
    lines = set(in_order)
    assert lines <= {i + 1 + header for i in BAD} and len(lines) == 5
    for e in report["examples"]:
        line = int(e.split(", line ")[1].split(":")[0].split(",")[0])
        assert BAD[line - 1 - header][1] in e
    assert shown  # five of seven shown, all counted

    # the rest is encoded exactly as the file without those lines (the same cut: the
    # permutation is drawn over the clean rows)
    reference = load_or_build(_source(clean, header), tmp_path / "c2")
    for split, arrays in reference.splits.items():
        for key, a in arrays.items():
            np.testing.assert_array_equal(a, np.asarray(skipped.splits[split][key]), err_msg=key)


def test_skip_reaches_metrics_json_and_the_option_is_checked(tmp_path: Path, make_cfg) -> None:
    from ranklab.train import train

    _write(tmp_path / "data" / "mine", header=True)
    from omegaconf import OmegaConf, open_dict

    cfg = make_cfg("data=criteo_sample", "model=lr", "trainer.max_epochs=1", tiny=False)
    source = {
        "_target_": "ranklab.data.CSVSplits",
        "name": "mine",
        "dir": str(tmp_path / "data" / "mine"),
        "files": {"all": "dirty.csv"},
        "split": {"method": "random", "seed": 1},
        "label": "click",
        "features": FEATURES,
        "on_bad_rows": "skip",
    }
    with open_dict(cfg):
        cfg.data.source = OmegaConf.create(source)
    m = train(cfg)
    assert m["skipped_rows"][str(tmp_path / "data" / "mine" / "dirty.csv")]["skipped"] == len(BAD)
    written = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert written["skipped_rows"] == m["skipped_rows"]
    with pytest.raises(ConfigError, match=r"data\.source\.on_bad_rows"):
        _source(tmp_path / "data" / "mine" / "dirty.csv", True, on_bad_rows="ignore")
