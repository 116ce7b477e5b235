"""The data pipeline's speed, beside its peer measured in the same run.

    make bench-data                                     # 1M rows, 3 repeats, FuxiCTR beside
    python benchmarks/data_throughput.py --rows 1000000 --repeats 3 [--no-peer]

On Criteo-format rows from ``ranklab-criteo-synth`` (written once into ``--work``):

* **preprocessing**: from the raw file to the committed cache (vocabularies with min count 10,
  Criteo's ``floor(ln(x)^2)`` count buckets, the 80/10/10 cut, the encoded ``.npy`` columns),
  for ranklab on the raw one-file TSV (``data=criteo_synthetic``) and on the same rows in the
  BARS layout (three header-ed CSV files), and for FuxiCTR 2.3.10's own ``build_dataset`` on
  that BARS layout with BARS' Criteo feature spec (``benchmarks/peers/fuxictr_preprocess.py``,
  run in a throwaway venv, ``--peer-python``; FuxiCTR cannot cut one file lazily). Each is a
  fresh process; the time excludes imports; peak RSS is that process's (FuxiCTR's Ray workers
  are other processes and not counted);
* **streamed preprocessing** (``--budget 4GB``): the raw file encoded in chunks within a memory
  budget (``data.memory_budget``), its time and peak RSS; ``--only-streamed`` measures just
  that (the 50M-row figure: ``--rows 50000000 --budget 4GB --only-streamed --repeats 1``);
* **the loader**: one shuffled training epoch of batches of ``--batch-size`` from the encoded
  split, ranklab's ``BatchLoader`` in memory and its out-of-core ``BlockLoader`` (blocks of
  ``--block-rows`` read from the cache's files), beside a bare in-memory loop (a seeded
  permutation and one gather per column, what one would write by hand), no model.

Medians of ``--repeats``, the tools alternating. Machines here are noisy: read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER_VENV = ROOT / ".bench" / "fuxictr"
PEER_SCRIPT = ROOT / "benchmarks" / "peers" / "fuxictr_preprocess.py"


def ensure_data(work: Path, rows: int, seed: int, bars_copy: bool = True) -> Path:
    """``work/criteo_synthetic/train.txt`` with ``rows`` lines, and (``bars_copy``) its
    BARS-layout copy in ``work/criteo_bars`` (first 80% / next 10% / last 10% of the lines:
    rows are i.i.d.; made in memory, so not for the 50M-row streamed run)."""
    import polars as pl

    from ranklab.data.readers import CRITEO_COLUMNS
    from ranklab.data.synthetic_criteo import CriteoSynth, write_criteo

    raw = work / "criteo_synthetic"
    info = raw / "train.txt.bayes.json"
    fresh = info.is_file() and (
        (d := json.loads(info.read_text()))["rows"] == rows and d["generator"]["seed"] == seed
    )
    if not fresh:
        print(f"writing {rows:,} Criteo-format rows into {raw} ...", flush=True)
        write_criteo(raw, rows, CriteoSynth(seed=seed))
        for f in (work / "criteo_bars").glob("*.csv"):
            f.unlink()
    bars = work / "criteo_bars"
    if bars_copy and not (bars / "test.csv").is_file():
        bars.mkdir(parents=True, exist_ok=True)
        df = pl.read_csv(
            raw / "train.txt",
            separator="\t",
            has_header=False,
            new_columns=CRITEO_COLUMNS,
            infer_schema=False,
        )
        a, b = int(df.height * 0.8), int(df.height * 0.9)
        for name, part in (("train", df[:a]), ("valid", df[a:b]), ("test", df[b:])):
            part.write_csv(bars / f"{name}.csv")
    return work


def source(work: Path, layout: str = "raw"):
    """The ``data=criteo_synthetic`` source over ``work``: the raw one-file TSV, or (``bars``)
    the same rows in the BARS layout."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from ranklab.config import compose

    cfg = compose(["data=criteo_synthetic", f"paths.data_dir={work}"])
    options = OmegaConf.to_container(cfg.data.source, resolve=True)
    if layout == "bars":
        options.update(
            dir=str(work / "criteo_bars"),
            files={"train": "train.csv", "val": "valid.csv", "test": "test.csv"},
            split=None,
            truth=None,
        )
    return instantiate(options)


def child_ranklab(work: Path, layout: str, cache: Path, budget: int | None = None) -> dict:
    """Build the cache of ``layout`` (raw | bars) from scratch, streamed in chunks when
    ``budget`` (bytes) is given; the seconds it took."""
    import logging

    from ranklab.data import load_or_build

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")  # the pass lines
    src = source(work, layout)
    t0 = time.perf_counter()
    data = load_or_build(src, cache, memory_budget=budget)
    seconds = time.perf_counter() - t0
    rows = sum(data.rows(s) for s in ("train", "val", "test"))
    vocab = sum(f.vocab_size for f in data.schema.features)
    return {"seconds": seconds, "rows": rows, "vocab": vocab}


def measure(cmd: list[str], log: Path) -> dict:
    """Run ``cmd`` (stdout+stderr to ``log``), return its JSON line and peak RSS in MiB."""
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed (log {log}):\n{text[-3000:]}")
    line = next(x for x in reversed(text.splitlines()) if x.startswith("{"))
    return json.loads(line) | {"rss_mb": usage.ru_maxrss / 1024}


def loader_rates(
    work: Path, cache: Path, batch_size: int, repeats: int, block_rows: int
) -> dict[str, list]:
    """Samples/s of one shuffled training epoch: ranklab's BatchLoader in memory, its
    out-of-core BlockLoader over the cache's files (blocks of ``block_rows``), and a bare
    in-memory loop."""
    import torch

    from ranklab.data import load_or_build
    from ranklab.data.batch import BatchLoader
    from ranklab.data.outofcore import BlockLoader, MappedSplit

    data = load_or_build(source(work), cache)
    split = data.tensors("train")
    assert data.directory is not None
    mapped = MappedSplit(data.directory / "train", data.schema)
    columns = list(split.features.values()) + list(split.labels.values())
    n = len(split)
    rates: dict[str, list] = {"ranklab": [], "ranklab out of core": [], "bare": []}
    for r in range(repeats):
        t0 = time.perf_counter()
        rows = sum(len(b) for b in BatchLoader(split, batch_size, shuffle=True, seed=r))
        rates["ranklab"].append(rows / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        loader = BlockLoader(mapped, batch_size, block_rows, shuffle=True, seed=r)
        rows = sum(len(b) for b in loader)
        rates["ranklab out of core"].append(rows / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(r))
        rows = 0
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            batch = [c.index_select(0, idx) for c in columns]
            rows += len(batch[0])
        rates["bare"].append(rows / (time.perf_counter() - t0))
    return rates


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0, help="the synthetic file's seed")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--work", type=Path, default=Path("/tmp/ranklab-bench-data"))
    ap.add_argument("--peer-python", type=Path, default=PEER_VENV / "bin" / "python")
    ap.add_argument("--no-peer", action="store_true", help="skip FuxiCTR")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument(
        "--budget",
        help="also preprocess the raw file streamed within this memory budget (e.g. 4GB)",
    )
    ap.add_argument("--only-streamed", action="store_true", help="only the streamed preprocessing")
    ap.add_argument(
        "--block-rows", type=int, default=250_000, help="out-of-core loader block (rows)"
    )
    ap.add_argument("--child", choices=["raw", "bars"], help=argparse.SUPPRESS)
    ap.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    from ranklab.utils import parse_bytes

    budget = parse_bytes(args.budget, "--budget")
    if args.child:
        print(json.dumps(child_ranklab(args.work, args.child, args.cache, budget)))
        return 0

    import shutil

    from rich.console import Console
    from rich.table import Table

    work = ensure_data(args.work, args.rows, args.seed, bars_copy=not args.only_streamed)
    peer = not args.no_peer and args.peer_python.is_file()
    if not args.no_peer and not peer:
        print(f"FuxiCTR venv not found at {args.peer_python} (make bench-data makes it): skipped")
    streamed = f"ranklab (raw TSV, streamed, budget {args.budget})"
    tools = ["ranklab (raw TSV, one file)", "ranklab (BARS CSV, three files)"]
    tools += [streamed] if budget else []
    tools += ["FuxiCTR 2.3.10 (BARS CSV)"] if peer else []
    if args.only_streamed:
        if not budget:
            ap.error("--only-streamed needs --budget")
        tools, peer = [streamed], False
    results: dict[str, list[dict]] = {t: [] for t in tools}
    for r in range(args.repeats):
        for tool in tools:
            out = work / "runs" / f"{r}-{tools.index(tool)}"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            if tool.startswith("FuxiCTR"):
                cmd = [str(args.peer_python), str(PEER_SCRIPT), str(work / "criteo_bars"), str(out)]
            else:
                layout = "raw" if "raw" in tool else "bars"
                cmd = [sys.executable, __file__, "--child", layout, "--work", str(work)]
                cmd += ["--cache", str(out / "cache")]
                cmd += ["--budget", str(args.budget)] if tool == streamed else []
            res = measure(cmd, out.with_suffix(".log"))
            results[tool].append(res)
            print(f"repeat {r + 1}: {tool}: {res['seconds']:.1f} s, {res['rss_mb']:,.0f} MiB")
            shutil.rmtree(out, ignore_errors=True)
    rates = {}
    if not args.only_streamed:
        rates = loader_rates(
            work, work / "loader-cache", args.batch_size, args.repeats, args.block_rows
        )

    console = Console()
    med = {t: statistics.median(x["seconds"] for x in v) for t, v in results.items()}
    table = Table(
        title=f"preprocessing {args.rows:,} Criteo-format rows (median of {args.repeats})"
    )
    for col in ("tool", "seconds", "rows/s", "peak RSS (MiB)", "vs FuxiCTR"):
        table.add_column(col, justify="left" if col == "tool" else "right")
    ref = med.get(tools[-1]) if peer else None
    for t, v in results.items():
        table.add_row(
            t,
            f"{med[t]:.1f}",
            f"{args.rows / med[t]:,.0f}",
            f"{max(x['rss_mb'] for x in v):,.0f}",
            f"{ref / med[t]:.2f}x" if ref else "",
        )
    console.print(table)
    if rates:
        lt = Table(
            title=f"loader: one shuffled training epoch, batch {args.batch_size} (out of core: "
            f"blocks of {args.block_rows:,} rows read from the cache's files)"
        )
        for col in ("loader", "samples/s (median)", "vs bare"):
            lt.add_column(col, justify="left" if col == "loader" else "right")
        lmed = {k: statistics.median(v) for k, v in rates.items()}
        for k in ("ranklab", "ranklab out of core", "bare"):
            lt.add_row(k, f"{lmed[k]:,.0f}", f"{lmed[k] / lmed['bare']:.2f}")
        console.print(lt)
    if args.json:
        args.json.write_text(json.dumps({"preprocess": results, "loader": rates}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
