"""Synthetic multi-task data: impressions with a click and, only after a click, a conversion,
with known probabilities, so every label has its Bayes-optimal ceiling.

Each task's logit is ``sqrt(rho) * f_shared(x) + sqrt(1 - rho) * f_task(x)``, scaled to
``std_logit``, where the f are planted functions of the same inputs (first-order weights per
id, low-rank pairwise interactions, numeric terms), made mutually uncorrelated and standardised
over the rows: the two logits have correlation ``rho = task_correlation`` (as in the MMoE
paper's synthetic study, which sets the cosine of the two tasks' weight vectors).
click ~ Bernoulli(pCTR); conversion
= click * Bernoulli(pCVR). Because the generator knows pCVR for every impression, the test
split also carries ``conversion_if_clicked``, the conversion each impression would have had
if clicked (evaluation only): a CVR model trained on clicked rows alone is scored against it
over every impression, which measures the selection bias ESMM addresses.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ranklab.data.dataset import GROUP_KEY, DataSource, EncodedData
from ranklab.data.schema import Feature, LabelSpec, Schema
from ranklab.data.synthetic import _standardise, check_pairs, planted_pairs, zipf_ids
from ranklab.errors import ConfigError
from ranklab.metrics import auc, logloss
from ranklab.utils import hash_object

GENERATOR_VERSION = 1
LABELS = (
    LabelSpec("click"),
    LabelSpec("conversion", condition="click", joint="ctcvr"),
)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def bias_for_rate(z: np.ndarray, rate: float, weights: np.ndarray | None = None) -> float:
    """The intercept b with the (``weights``-weighted) mean of sigmoid(b + z) equal to ``rate``
    (bisection: monotone in b)."""
    w = np.ones_like(z) if weights is None else weights
    lo, hi = -30.0, 30.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if (w * _sigmoid(mid + z)).sum() / w.sum() < rate:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def orthonormal(fs: list[np.ndarray]) -> list[np.ndarray]:
    """Gram-Schmidt over the rows: centred, mutually uncorrelated, unit variance. Random planted
    functions of the same few ids are correlated by chance; made orthogonal, the two task
    logits correlate by exactly ``task_correlation``. Each result is still a function of x."""
    out: list[np.ndarray] = []
    for f in fs:
        g = f - f.mean()
        for h in out:
            g = g - (g @ h) / (h @ h) * h
        out.append(g / g.std())
    return out


class SyntheticMTL(DataSource):
    """Deterministic click/conversion data (``data=synthetic_mtl``).

    Args:
        n_train, n_val, n_test: rows per split (i.i.d.).
        vocab_sizes: ids per categorical field (field 0 plays the user: the group of gAUC).
        n_numeric: standard-normal numeric fields.
        zipf_exponent: skew of id frequencies.
        n_pairs, pair_rank: planted pairwise interactions per planted function.
        task_correlation: rho in [0, 1], the correlation of the click and conversion logits.
        std_logit: standard deviation of each task's logit (before its intercept).
        ctr: the mean click probability; cvr: the mean conversion probability of clicked
            impressions.
        seed: the data seed (independent of the training seed).
    """

    cacheable = False  # regenerating is faster than reading a cache

    def __init__(
        self,
        n_train: int = 200_000,
        n_val: int = 100_000,
        n_test: int = 100_000,
        vocab_sizes: Sequence[int] = (50, 20, 20, 10, 10, 10, 5, 5, 5, 5),
        n_numeric: int = 2,
        zipf_exponent: float = 1.1,
        n_pairs: int = 4,
        pair_rank: int = 2,
        task_correlation: float = 0.5,
        std_logit: float = 1.5,
        ctr: float = 0.3,
        cvr: float = 0.08,
        seed: int = 0,
        name: str = "synthetic_mtl",
    ) -> None:
        if not 0.0 <= task_correlation <= 1.0:
            raise ConfigError(
                "data.source.task_correlation", f"must be in [0, 1], got {task_correlation}"
            )
        for key, rate in (("ctr", ctr), ("cvr", cvr)):
            if not 0.0 < rate < 1.0:
                raise ConfigError(f"data.source.{key}", f"must be in (0, 1), got {rate}")
        check_pairs(n_pairs, len(vocab_sizes))
        self.kw = dict(
            n_train=n_train,
            n_val=n_val,
            n_test=n_test,
            vocab_sizes=list(vocab_sizes),
            n_numeric=n_numeric,
            zipf_exponent=zipf_exponent,
            n_pairs=n_pairs,
            pair_rank=pair_rank,
            task_correlation=task_correlation,
            std_logit=std_logit,
            ctr=ctr,
            cvr=cvr,
            seed=seed,
        )
        self.name = name

    def fingerprint(self) -> str:
        return hash_object([GENERATOR_VERSION, self.kw])[:16]

    def _planted(
        self, rng: np.random.Generator, ids: list[np.ndarray], num: np.ndarray
    ) -> np.ndarray:
        """One planted function of the inputs, standardised: first order + pairs + numeric."""
        k, vocab = self.kw, self.kw["vocab_sizes"]
        n = len(ids[0])
        first = _standardise(sum(rng.standard_normal(v)[x] for v, x in zip(vocab, ids)), 1.0)
        pairs = planted_pairs(rng, ids, vocab, k["n_pairs"], k["pair_rank"])
        numeric = np.zeros(n)
        if k["n_numeric"]:
            numeric = num @ rng.standard_normal(k["n_numeric"]) + np.sin(2 * num[:, 0])
        return _standardise(first + _standardise(pairs, 1.0) + _standardise(numeric, 0.5), 1.0)

    def generate(self) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
        """(inputs, pCTR (N,), pCVR (N,), uniform draws (N, 2)) of every row."""
        k = self.kw
        rng = np.random.default_rng(k["seed"])
        n = k["n_train"] + k["n_val"] + k["n_test"]
        ids = [zipf_ids(rng, v, n, k["zipf_exponent"]) for v in k["vocab_sizes"]]
        num = rng.standard_normal((n, k["n_numeric"]))
        shared, f_click, f_conv = orthonormal([self._planted(rng, ids, num) for _ in range(3)])
        rho = k["task_correlation"]
        z_click = k["std_logit"] * (np.sqrt(rho) * shared + np.sqrt(1 - rho) * f_click)
        z_conv = k["std_logit"] * (np.sqrt(rho) * shared + np.sqrt(1 - rho) * f_conv)
        p_click = _sigmoid(z_click + bias_for_rate(z_click, k["ctr"]))
        p_conv = _sigmoid(z_conv + bias_for_rate(z_conv, k["cvr"], weights=p_click))
        inputs = {f"c{i}": (x + 2).astype(np.int64) for i, x in enumerate(ids)}
        inputs.update({f"n{j}": num[:, j].astype(np.float32) for j in range(k["n_numeric"])})
        return inputs, p_click, p_conv, rng.random((n, 2))

    def build(self) -> EncodedData:
        k = self.kw
        inputs, p_click, p_conv, u = self.generate()
        click = (u[:, 0] < p_click).astype(np.float32)
        would_convert = (u[:, 1] < p_conv).astype(np.float32)  # if it were clicked
        conversion = click * would_convert
        bounds = np.cumsum([0, k["n_train"], k["n_val"], k["n_test"]])
        splits, bayes, rows = {}, {}, {}
        for s, lo, hi in zip(("train", "val", "test"), bounds[:-1], bounds[1:]):
            sl = slice(lo, hi)
            arrays = {n: a[sl] for n, a in inputs.items()}
            arrays.update(click=click[sl], conversion=conversion[sl])
            arrays[GROUP_KEY] = arrays["c0"].copy()
            if s == "test":
                arrays["conversion_if_clicked"] = would_convert[sl]
            splits[s] = arrays
            rows[s] = hi - lo
            bayes[s] = self._bayes(
                p_click[sl], p_conv[sl], click[sl], conversion[sl], would_convert[sl]
            )
        feats = [
            Feature(f"c{i}", "categorical", vocab_size=v + 2, role="user" if i == 0 else "context")
            for i, v in enumerate(k["vocab_sizes"])
        ] + [Feature(f"n{j}", "numeric") for j in range(k["n_numeric"])]
        counterfactual = {"conversion": "conversion_if_clicked"}
        meta = {"source": self.name, "generator": k, "bayes": bayes, "rows": rows}
        schema = Schema(
            tuple(feats),
            labels=LABELS,
            group="c0",
            evaluation=(Feature("conversion_if_clicked", "numeric"),),
            meta={
                "bayes": bayes,
                "counterfactual": counterfactual,
                "generator": hash_object(k)[:16],
            },
        )
        return EncodedData(schema, splits, meta)

    @staticmethod
    def _bayes(
        p_click: np.ndarray,
        p_conv: np.ndarray,
        click: np.ndarray,
        conversion: np.ndarray,
        would: np.ndarray,
    ) -> dict[str, float]:
        """The true probabilities' metrics, under the task's metric names."""
        t = torch.from_numpy
        clicked = click == 1
        out = {}
        for name, p, y in (
            ("click", p_click, click),
            ("conversion", p_conv[clicked], conversion[clicked]),
            ("ctcvr", p_click * p_conv, conversion),
            ("conversion/counterfactual", p_conv, would),
        ):
            out[f"{name}/auc"] = auc(t(p), t(y))
            out[f"{name}/logloss"] = logloss(t(p), t(y))
        out["auc"] = (out["click/auc"] + out["conversion/auc"]) / 2
        out["logloss"] = (out["click/logloss"] + out["conversion/logloss"]) / 2
        out["base_rate"] = float(click.mean())
        out["conversion_rate_of_clicks"] = float(conversion[clicked].mean())
        return out
