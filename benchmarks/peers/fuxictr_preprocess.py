"""FuxiCTR's own preprocessing of a BARS-layout Criteo split (train/valid/test CSV with a header):
run by ``benchmarks/data_throughput.py`` in the benchmark's throwaway venv (fuxictr 2.3.10 needs
``polars<2`` and Ray, which ranklab's lock must not hold). Prints one JSON line:
``{"seconds": ..., "rows": ...}``, the time from reading to the last parquet file written
(imports and Ray's start excluded; Ray starts inside ``build_dataset``, so it is included there).

The feature spec is BARS' Criteo one: I1..I13 bucketed by ``floor(ln(x)^2)`` for x > 2 (the
``convert_to_bucket`` preprocess a FuxiCTR Criteo config names; FuxiCTR leaves its body to the
user, so it is written here as a polars expression), C1..C26 categorical, min count 10.
"""

from __future__ import annotations

import json
import logging
import sys
import time

import polars as pl
from fuxictr.preprocess.build_dataset import build_dataset
from fuxictr.preprocess.feature_processor import FeatureProcessor


class CriteoProcessor(FeatureProcessor):
    def convert_to_bucket(self, col: str) -> pl.Expr:
        x = pl.col(col).cast(pl.Float64)
        return (
            pl.when(x > 2).then((x.log() ** 2).floor()).otherwise(x).cast(pl.Int64).cast(pl.String)
        )


def main(data_dir: str, out_dir: str) -> None:
    logging.basicConfig(level=logging.WARNING)
    counts = [f"I{i}" for i in range(1, 14)]
    cats = [f"C{i}" for i in range(1, 27)]
    features = [
        {"name": counts, "active": True, "dtype": "float", "type": "categorical",
         "preprocess": "convert_to_bucket", "fill_na": 0},
        {"name": cats, "active": True, "dtype": "str", "type": "categorical"},
    ]  # fmt: skip
    label = {"name": "label", "dtype": "float"}
    t0 = time.perf_counter()
    proc = CriteoProcessor(features, label, dataset_id="criteo_fuxictr", data_root=out_dir)
    build_dataset(
        proc,
        train_data=f"{data_dir}/train.csv",
        valid_data=f"{data_dir}/valid.csv",
        test_data=f"{data_dir}/test.csv",
        data_format="csv",
        min_categr_count=10,
    )
    seconds = time.perf_counter() - t0
    rows = sum(
        pl.scan_parquet(f"{out_dir}/criteo_fuxictr/{s}.parquet").select(pl.len()).collect().item()
        for s in ("train", "valid", "test")
    )
    print(json.dumps({"seconds": seconds, "rows": rows}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
