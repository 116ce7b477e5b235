"""Synthetic CTR data with a known click probability, so every result has a ceiling.

The logit is a sum of four parts, each scaled to a configured standard deviation:

* first order: one weight per (field, id), ``w_f[x_f]``;
* planted pairs: low-rank products ``<U_fg[x_f], V_fg[x_g]>`` for chosen field pairs;
* higher-order crosses: products ``a[x_f] * b[x_g] * c[x_h]`` over three small fields;
* numeric: linear terms plus a product and a sine, so a linear model misses some of it.

Categorical ids follow Zipf-like frequencies. Labels are Bernoulli draws from the true
probability, which is kept to report the Bayes-optimal AUC and log loss of each split:
no model can beat them in expectation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ranklab.data.dataset import GROUP_KEY, DataSource, EncodedData
from ranklab.data.schema import Feature, Schema
from ranklab.errors import ConfigError
from ranklab.metrics import bayes_metrics
from ranklab.utils import hash_object

GENERATOR_VERSION = 1


def zipf_ids(rng: np.random.Generator, vocab: int, n: int, exponent: float) -> np.ndarray:
    """(n,) draws from {0..vocab-1} with P(k) proportional to (k+1)^-exponent."""
    p = (np.arange(1, vocab + 1, dtype=np.float64)) ** -exponent
    return rng.choice(vocab, size=n, p=p / p.sum())


def _standardise(z: np.ndarray, std: float) -> np.ndarray:
    s = z.std()
    return z * (std / s) if s > 0 and std > 0 else np.zeros_like(z)


def _bias_for_rate(z: np.ndarray, rate: float) -> float:
    """The intercept b with mean(sigmoid(b + z)) = rate (bisection: monotone in b)."""
    lo, hi = -30.0, 30.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if (1 / (1 + np.exp(-(mid + z)))).mean() < rate:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def check_pairs(n_pairs: int, n_fields: int) -> None:
    if n_pairs > n_fields * (n_fields - 1) // 2:
        raise ConfigError(
            "data.source.n_pairs",
            f"at most {n_fields * (n_fields - 1) // 2} pairs for {n_fields} fields",
        )


def planted_pairs(
    rng: np.random.Generator, ids: list[np.ndarray], vocab: Sequence[int], n_pairs: int, rank: int
) -> np.ndarray:
    """(N,) sum of ``n_pairs`` low-rank interactions <U[x_f], V[x_g]> of distinct field pairs."""
    n_f = len(vocab)
    all_pairs = [(f, g) for f in range(n_f) for g in range(f + 1, n_f)]
    chosen = rng.choice(len(all_pairs), size=n_pairs, replace=False)
    pairs = np.zeros(len(ids[0]))
    for c in chosen:
        f, g = all_pairs[c]
        u = rng.standard_normal((vocab[f], rank))
        w = rng.standard_normal((vocab[g], rank))
        pairs += (u[ids[f]] * w[ids[g]]).sum(1)
    return pairs


def generated_dataset(
    name: str,
    kw: dict,
    feats: Sequence[Feature],
    arrays: dict[str, np.ndarray],
    label: np.ndarray,
    prob: np.ndarray,
    group: str,
) -> EncodedData:
    """Cut generated rows (i.i.d.) into train/val/test, ``kw["n_train"]`` etc. rows each, and
    record each split's Bayes-optimal AUC and log loss (those of the true probabilities)."""
    bounds = np.cumsum([0, kw["n_train"], kw["n_val"], kw["n_test"]])
    splits, bayes = {}, {}
    for s, lo, hi in zip(("train", "val", "test"), bounds[:-1], bounds[1:]):
        split = {n: a[lo:hi] for n, a in arrays.items()}
        split["label"] = label[lo:hi]
        split[GROUP_KEY] = split[group].copy()
        splits[s] = split
        bayes[s] = bayes_metrics(prob[lo:hi], label[lo:hi])
    rows = {s: len(a["label"]) for s, a in splits.items()}
    meta = {"source": name, "generator": kw, "bayes": bayes, "rows": rows}
    # which draw this is (its settings decide the planted model and every row): a checkpoint
    # evaluated on another draw would be scored on another task (ranklab-evaluate checks it)
    schema_meta = {"bayes": bayes, "generator": hash_object(kw)[:16]}
    schema = Schema(tuple(feats), group=group, meta=schema_meta)
    return EncodedData(schema, splits, meta)


class SyntheticCTR(DataSource):
    """Deterministic synthetic CTR data (the embedded default dataset).

    Args:
        n_train, n_val, n_test: rows per split (drawn i.i.d. from one distribution).
        vocab_sizes: ids per categorical field; field 0 plays the user (the group for
            grouped AUC), field 1 the item.
        n_numeric: numeric fields, standard normal.
        zipf_exponent: skew of id frequencies.
        n_pairs, pair_rank: planted pairwise interactions and their rank.
        n_triples: planted third-order crosses, among fields with at most
            ``triple_max_vocab`` ids (so that the cross is learnable from the data).
        std_first, std_pairs, std_triples, std_numeric: standard deviation of each logit part.
        base_rate: the mean click probability.
        seed: the data seed (independent of the training seed, so seeds vary only training).
    """

    cacheable = False  # regenerating is faster than reading a cache

    def __init__(
        self,
        n_train: int = 200_000,
        n_val: int = 50_000,
        n_test: int = 50_000,
        vocab_sizes: Sequence[int] = (50, 20, 20, 10, 10, 10, 5, 5, 5, 5),
        n_numeric: int = 3,
        zipf_exponent: float = 1.1,
        n_pairs: int = 5,
        pair_rank: int = 2,
        n_triples: int = 2,
        triple_max_vocab: int = 10,
        std_first: float = 1.0,
        std_pairs: float = 1.0,
        std_triples: float = 0.5,
        std_numeric: float = 0.4,
        base_rate: float = 0.3,
        seed: int = 0,
        name: str = "synthetic",
    ) -> None:
        self.kw = dict(
            n_train=n_train,
            n_val=n_val,
            n_test=n_test,
            vocab_sizes=list(vocab_sizes),
            n_numeric=n_numeric,
            zipf_exponent=zipf_exponent,
            n_pairs=n_pairs,
            pair_rank=pair_rank,
            n_triples=n_triples,
            triple_max_vocab=triple_max_vocab,
            std_first=std_first,
            std_pairs=std_pairs,
            std_triples=std_triples,
            std_numeric=std_numeric,
            base_rate=base_rate,
            seed=seed,
        )
        self.name = name
        check_pairs(n_pairs, len(self.kw["vocab_sizes"]))
        if n_triples and sum(v <= triple_max_vocab for v in self.kw["vocab_sizes"]) < 3:
            raise ConfigError(
                "data.source.triple_max_vocab", "fewer than 3 fields are small enough for triples"
            )

    def fingerprint(self) -> str:
        return hash_object([GENERATOR_VERSION, self.kw])[:16]

    def generate(self) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """Raw draw: field arrays (ids from 0, numeric values), true logit (N,), labels (N,)."""
        k = self.kw
        rng = np.random.default_rng(k["seed"])
        vocab = k["vocab_sizes"]
        n = k["n_train"] + k["n_val"] + k["n_test"]
        ids = [zipf_ids(rng, v, n, k["zipf_exponent"]) for v in vocab]
        num = rng.standard_normal((n, k["n_numeric"]))
        # first order
        first = sum(rng.standard_normal(v)[x] for v, x in zip(vocab, ids))
        pairs = planted_pairs(rng, ids, vocab, k["n_pairs"], k["pair_rank"])
        # third-order crosses among small fields: products a[x_f] * b[x_g] * c[x_h]
        triples = np.zeros(n)
        small = [i for i, v in enumerate(vocab) if v <= k["triple_max_vocab"]]
        for _ in range(k["n_triples"]):
            f, g, h = rng.choice(small, size=3, replace=False)
            a, b, c = (rng.standard_normal(vocab[i]) for i in (f, g, h))
            triples += a[ids[f]] * b[ids[g]] * c[ids[h]]
        # numeric: linear + a product + a sine
        numeric = np.zeros(n)
        if k["n_numeric"]:
            numeric = num @ rng.standard_normal(k["n_numeric"])
            numeric = numeric + np.sin(2 * num[:, 0])
            if k["n_numeric"] > 1:
                numeric = numeric + num[:, 0] * num[:, 1]
        logit = (
            _standardise(first, k["std_first"])
            + _standardise(pairs, k["std_pairs"])
            + _standardise(triples, k["std_triples"])
            + _standardise(numeric, k["std_numeric"])
        )
        logit = logit + _bias_for_rate(logit, k["base_rate"])
        prob = 1 / (1 + np.exp(-logit))
        label = (rng.random(n) < prob).astype(np.float32)
        fields = {f"c{i}": x for i, x in enumerate(ids)}
        fields.update({f"n{j}": num[:, j].astype(np.float32) for j in range(k["n_numeric"])})
        return fields, logit, label

    def build(self) -> EncodedData:
        k = self.kw
        fields, logit, label = self.generate()
        prob = 1 / (1 + np.exp(-logit))
        roles = {0: "user", 1: "item"}
        feats = [
            Feature(f"c{i}", "categorical", vocab_size=v + 2, role=roles.get(i, "context"))
            for i, v in enumerate(k["vocab_sizes"])
        ] + [Feature(f"n{j}", "numeric") for j in range(k["n_numeric"])]
        arrays = {
            n: (x + 2).astype(np.int64) if n.startswith("c") else x for n, x in fields.items()
        }
        return generated_dataset(self.name, k, feats, arrays, label, prob, group="c0")
