"""Criteo-format synthetic files with a planted click probability: scale tests on files that
look like the real ones, every result read against its Bayes-optimal ceiling.

``write_criteo(out_dir, rows)`` writes ``train.txt`` as Criteo publishes it (tab-separated, no
header: label, I1..I13, C1..C26, empty fields for missing values), ``train.txt.truth.npy``
(the true click probability of each line, float32) and ``train.txt.bayes.json`` (the
Bayes-optimal AUC and log loss of the whole file, and the generator's settings). A
``CSVSplits`` source given ``truth:`` reports each split's ceiling from the ``.npy``.

The generator, at Criteo's shape:

* I1..I13: heavy-tailed counts, ``floor(exp(N(mu, sigma))) - 1``, each missing at its own rate;
* C1..C26: ids with Zipf frequencies over the Kaggle release's cardinalities (capped at
  ``max_vocab``), written as 8 hex digits, some fields often empty;
* logit = first-order weights per id + low-rank pairwise interactions between a few fields
  (std 0.8) + a nonlinear effect of each count's log (a missing count has its own effect),
  each part scaled to its standard deviation, the intercept giving ``base_rate`` (Criteo's
  Kaggle file: 25.6% clicks); labels are Bernoulli draws.

Rows are drawn in fixed blocks, each from its own seeded stream, so memory stays bounded by a
block (plus the per-id weights) and a file is the same for the same (seed, rows, settings).
"""

from __future__ import annotations

import argparse
import binascii
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from ranklab.data.readers import CRITEO_COLUMNS
from ranklab.metrics import bayes_metrics

# cardinalities of C1..C26 in the Kaggle release (as listed by Facebook's DLRM for it)
KAGGLE_CARDINALITIES = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
    27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
)  # fmt: skip
# share of empty fields per column, roughly as in the Kaggle file
COUNT_MISSING = (0.45, 0.0, 0.21, 0.22, 0.03, 0.22, 0.04, 0.0, 0.04, 0.45, 0.04, 0.77, 0.22)
CATEGORY_MISSING = (0.0,) * 2 + (0.03,) * 2 + (0.12, 0.0, 0.0, 0.0, 0.0, 0.03, 0.0, 0.03) + (
    0.0, 0.0, 0.0, 0.03, 0.0, 0.0, 0.44, 0.44, 0.03, 0.76, 0.0, 0.03, 0.44, 0.44,
)  # fmt: skip
BLOCK = 1 << 18  # rows per seeded block; fixed, so a file does not depend on memory


@dataclass
class CriteoSynth:
    """The generator's settings (written to the ``.bayes.json`` side file)."""

    seed: int = 0
    max_vocab: int = 1_000_000
    zipf_exponent: float = 1.05
    base_rate: float = 0.256
    std_first: float = 1.0
    std_pairs: float = 0.8
    std_counts: float = 0.6
    pairs: tuple[tuple[int, int], ...] = ((0, 1), (5, 8), (10, 16), (13, 19))
    pair_rank: int = 2
    cardinalities: tuple[int, ...] = field(default=KAGGLE_CARDINALITIES)

    def vocab(self) -> list[int]:
        return [min(c, self.max_vocab) for c in self.cardinalities]


class _Truth:
    """Per-id weights and per-count effects, drawn once from the seed; the scales and the
    intercept come from a pilot sample, so every block uses the same function."""

    def __init__(self, cfg: CriteoSynth) -> None:
        self.cfg = cfg
        rng = np.random.default_rng([cfg.seed, 1])
        self.vocab = cfg.vocab()
        self.first = [rng.standard_normal(v).astype(np.float32) for v in self.vocab]
        self.pair_u = [
            rng.standard_normal((self.vocab[f], cfg.pair_rank)).astype(np.float32)
            for f, _ in cfg.pairs
        ]
        self.pair_v = [
            rng.standard_normal((self.vocab[g], cfg.pair_rank)).astype(np.float32)
            for _, g in cfg.pairs
        ]
        self.mu = rng.uniform(0.5, 4.0, 13)
        self.sigma = rng.uniform(0.8, 2.0, 13)
        self.slope = rng.standard_normal(13)
        self.wiggle = rng.standard_normal(13)
        self.if_missing = rng.standard_normal(13)
        self.zipf = [self._zipf_cdf(v) for v in self.vocab]
        self.scale, self.bias = np.ones(3), 0.0
        pilot = self.draw(np.random.default_rng([cfg.seed, 2]), 100_000)
        parts = pilot["parts"]
        self.scale = np.array(
            [
                s / max(p.std(), 1e-12)
                for s, p in zip((cfg.std_first, cfg.std_pairs, cfg.std_counts), parts)
            ]
        )
        z = sum(k * p for k, p in zip(self.scale, parts))
        lo, hi = -30.0, 30.0  # the intercept giving base_rate (monotone: bisection)
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (
                (mid, hi) if (1 / (1 + np.exp(-(mid + z)))).mean() < cfg.base_rate else (lo, mid)
            )
        self.bias = (lo + hi) / 2

    def _zipf_cdf(self, vocab: int) -> np.ndarray:
        p = np.arange(1, vocab + 1, dtype=np.float64) ** -self.cfg.zipf_exponent
        return np.cumsum(p / p.sum())

    def draw(self, rng: np.random.Generator, n: int) -> dict:
        """One block: ids (26, n) (-1 missing), counts (13, n) (>= -1, as Criteo's I2 holds
        -1s) and their missing mask, the logit's three unscaled parts, the probability and the
        labels."""
        ids = np.empty((26, n), dtype=np.int64)
        for f, cdf in enumerate(self.zipf):
            ids[f] = np.minimum(np.searchsorted(cdf, rng.random(n)), len(cdf) - 1)
        first = sum(w[x] for w, x in zip(self.first, ids)).astype(np.float64)
        pairs = np.zeros(n)
        for (f, g), u, v in zip(self.cfg.pairs, self.pair_u, self.pair_v):
            pairs += (u[ids[f]] * v[ids[g]]).sum(1)
        raw = np.exp(rng.normal(self.mu[:, None], self.sigma[:, None], (13, n)))
        counts = np.floor(raw).astype(np.int64) - 1
        missing = rng.random((13, n)) < np.array(COUNT_MISSING)[:, None]
        logx = np.log1p(np.maximum(counts, 0))
        effect = self.slope[:, None] * logx / 3 + self.wiggle[:, None] * np.sin(logx)
        effect = np.where(missing, self.if_missing[:, None], effect).sum(0)
        # a missing category hides its id from the data, not from the truth
        ids[rng.random((26, n)) < np.array(CATEGORY_MISSING)[:, None]] = -1
        z = self.bias + self.scale[0] * first + self.scale[1] * pairs + self.scale[2] * effect
        prob = 1 / (1 + np.exp(-z))
        label = (rng.random(n) < prob).astype(np.int8)
        return {
            "ids": ids,
            "counts": counts,
            "missing": missing,
            "parts": (first, pairs, effect),
            "prob": prob,
            "label": label,
        }


def _hex_ids(ids: np.ndarray, field_no: int) -> pl.Series:
    """(n,) ids -> 8-hex-digit strings as Criteo writes them (a fixed hash of field and id);
    -1 -> null. Vectorised: hexlify the big-endian bytes and view them as 8-byte strings."""
    mask = np.uint64(0xFFFFFFFF)
    h = ((ids.astype(np.uint64) + np.uint64(field_no << 24)) * np.uint64(2654435761)) & mask
    h ^= h >> np.uint64(15)  # murmur-style finalizer: small ids get unlike digits too
    h = (h * np.uint64(2246822519)) & mask
    h ^= h >> np.uint64(13)
    text = np.frombuffer(binascii.hexlify(h.astype(">u4").tobytes()), dtype="S8")
    s = pl.Series(text, dtype=pl.Binary).cast(pl.String)
    return s.set(pl.Series(ids < 0), None) if (ids < 0).any() else s  # type: ignore[arg-type]


def write_criteo(out_dir: str | Path, rows: int, cfg: CriteoSynth | None = None) -> dict:
    """Write ``train.txt`` (+ ``.truth.npy``, ``.bayes.json``) with ``rows`` lines into
    ``out_dir``; returns the Bayes-optimal metrics of the whole file. Files are written under
    temporary names and renamed when complete."""
    cfg = cfg or CriteoSynth()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "train.txt"
    truth = _Truth(cfg)
    tmp_txt, tmp_npy = out / ".train.txt.part", out / ".train.txt.truth.part.npy"
    probs = np.lib.format.open_memmap(tmp_npy, mode="w+", dtype=np.float32, shape=(rows,))
    labels = np.empty(rows, dtype=np.int8)
    with open(tmp_txt, "wb") as f:
        for b, start in enumerate(range(0, rows, BLOCK)):
            n = min(BLOCK, rows - start)
            d = truth.draw(np.random.default_rng([cfg.seed, 3, b]), n)
            cols = {"label": pl.Series(d["label"].astype(np.int64)).cast(pl.String)}
            for j in range(13):
                s, gone = pl.Series(d["counts"][j]).cast(pl.String), d["missing"][j]
                cols[f"I{j + 1}"] = s.set(pl.Series(gone), None) if gone.any() else s  # type: ignore[arg-type]
            for j in range(26):
                cols[f"C{j + 1}"] = _hex_ids(d["ids"][j], j)
            pl.DataFrame(cols).select(CRITEO_COLUMNS).write_csv(
                f, separator="\t", include_header=False, null_value="", quote_style="never"
            )
            probs[start : start + n] = d["prob"]
            labels[start : start + n] = d["label"]
    probs.flush()
    bayes = bayes_metrics(np.asarray(probs), labels)
    info = {"rows": rows, "bayes": bayes, "generator": asdict(cfg) | {"block": BLOCK}}
    del probs
    tmp_txt.replace(path)
    tmp_npy.replace(out / "train.txt.truth.npy")
    (out / "train.txt.bayes.json").write_text(json.dumps(info, indent=2) + "\n")
    return bayes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="ranklab-criteo-synth",
        description="Write a Criteo-format TSV with a planted click probability "
        "(train.txt, train.txt.truth.npy, train.txt.bayes.json); train on it with "
        "data=criteo_synthetic paths.data_dir=<the folder above OUT>.",
    )
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--out", type=Path, default=Path("data/criteo_synthetic"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-vocab", type=int, default=1_000_000, help="cap on ids per field")
    args = ap.parse_args(argv)
    if args.rows < 1 or args.max_vocab < 1:
        print("error: --rows and --max-vocab must be >= 1", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    bayes = write_criteo(args.out, args.rows, CriteoSynth(seed=args.seed, max_vocab=args.max_vocab))
    print(
        f"wrote {args.out / 'train.txt'}: {args.rows:,} rows in {time.perf_counter() - t0:.1f} s; "
        f"Bayes AUC {bayes['auc']:.5f}, log loss {bayes['logloss']:.5f}, "
        f"click rate {bayes['base_rate']:.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
