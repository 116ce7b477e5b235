"""Synthetic sequence-aware CTR data: the click depends on the target's affinity to the history.

Items have latent vectors clustered by category and Zipf popularity. Each sample has a user,
a history of up to ``max_len`` items drawn from that user's category tastes (each with an
action type: click, cart or buy) and a target item (half from the user's tastes, half from
popularity). The true logit is

    b + item effect
      + recency- and action-weighted mean similarity of the target to the history items
        (weight ``recency_decay ** steps_back`` times the action weight)
      + the similarity of the target to the most recent item,

each part scaled to a configured standard deviation. A model that sees only user and item ids
misses most of it; attention over the history recovers the affinity; knowing the order (which
item is the most recent) recovers more. The true probabilities give the Bayes-optimal metrics.
"""

from __future__ import annotations

import numpy as np

from ranklab.data.dataset import DataSource, EncodedData
from ranklab.data.schema import Feature
from ranklab.data.synthetic import _bias_for_rate, _standardise, generated_dataset
from ranklab.utils import hash_object

GENERATOR_VERSION = 1
ACTION_PROBS = (0.7, 0.2, 0.1)  # click, cart, buy
ACTION_WEIGHTS = (1.0, 2.0, 3.0)


def sample_rows(rng: np.random.Generator, probs: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """For each r in ``rows`` draw one column of ``probs[r]`` (vectorised inverse CDF).

    probs: (R, K) rows summing to 1; rows: (n,) row indices -> (n,) column indices.
    """
    cdf = np.cumsum(probs, axis=1)
    cdf[:, -1] = 1.0
    k = probs.shape[1]
    flat = (cdf + np.arange(len(probs))[:, None]).ravel()  # row r's CDF shifted into [r, r+1]
    pos = np.searchsorted(flat, rows + rng.random(len(rows)), side="right")
    return np.minimum(pos - rows * k, k - 1)


class SyntheticSeq(DataSource):
    """Deterministic synthetic behaviour-sequence CTR data (``data=synthetic_seq``).

    Args:
        n_train, n_val, n_test: samples per split (i.i.d.).
        n_users, n_items, n_categories, dim: sizes of the latent world.
        item_spread: standard deviation of an item's latent vector around its category's
            centre (before normalising; the centres are standard normal).
        max_len: L; history lengths are uniform in [min_len, max_len].
        taste_concentration: Dirichlet concentration of a user's category tastes (small:
            few favourite categories).
        std_item, std_affinity, std_last: standard deviations of the logit parts.
        recency_decay: weight of an item k steps back is recency_decay ** k.
        base_rate: mean click probability.
        seed: the data seed.
    """

    cacheable = False

    def __init__(
        self,
        n_train: int = 150_000,
        n_val: int = 25_000,
        n_test: int = 25_000,
        n_users: int = 20_000,
        n_items: int = 500,
        n_categories: int = 20,
        dim: int = 8,
        item_spread: float = 0.35,
        max_len: int = 30,
        min_len: int = 1,
        taste_concentration: float = 0.3,
        std_item: float = 0.5,
        std_affinity: float = 1.2,
        std_last: float = 0.6,
        recency_decay: float = 0.8,
        base_rate: float = 0.3,
        seed: int = 0,
        name: str = "synthetic_seq",
    ) -> None:
        from ranklab.errors import ConfigError

        if max_len < 1:
            raise ConfigError("data.source.max_len", f"must be >= 1, got {max_len}")
        if not 1 <= min_len <= max_len:
            raise ConfigError(
                "data.source.min_len", f"must be in [1, max_len={max_len}], got {min_len}"
            )
        self.kw = {
            k: v
            for k, v in locals().items()
            if k not in ("self", "name", "ConfigError", "__class__")
        }
        self.name = name

    def fingerprint(self) -> str:
        return hash_object([GENERATOR_VERSION, self.kw])[:16]

    def build(self) -> EncodedData:
        k = self.kw
        rng = np.random.default_rng(k["seed"])
        n = k["n_train"] + k["n_val"] + k["n_test"]
        n_items, n_cat, dim, L = k["n_items"], k["n_categories"], k["dim"], k["max_len"]
        # items: category, latent vector near its category's centre, Zipf popularity
        cate = rng.integers(0, n_cat, n_items)
        centres = rng.standard_normal((n_cat, dim))
        vec = centres[cate] + k["item_spread"] * rng.standard_normal((n_items, dim))
        vec /= np.linalg.norm(vec, axis=1, keepdims=True)
        pop = 1.0 / np.arange(1, n_items + 1) ** 0.8
        rng.shuffle(pop)
        # popularity within each category, as a (C, n_items) row-stochastic matrix
        within = np.where(cate[None, :] == np.arange(n_cat)[:, None], pop[None, :], 0.0)
        within /= within.sum(1, keepdims=True)
        tastes = rng.dirichlet(np.full(n_cat, k["taste_concentration"]), size=k["n_users"])
        user = rng.integers(0, k["n_users"], n)
        # histories: lengths, then for each slot a category from the user's tastes and an item
        length = rng.integers(k["min_len"], L + 1, n)
        slot_valid = np.arange(L)[None, :] >= (L - length)[:, None]  # left-padded, recent at L-1
        slot_user = np.repeat(user, L)
        slot_cat = sample_rows(rng, tastes, slot_user)
        hist = sample_rows(rng, within, slot_cat).reshape(n, L)
        action = rng.choice(3, size=(n, L), p=ACTION_PROBS)
        # targets: half from the user's tastes, half from overall popularity
        from_taste = rng.random(n) < 0.5
        target_cat = sample_rows(rng, tastes, user)
        target = np.where(
            from_taste,
            sample_rows(rng, within, target_cat),
            rng.choice(n_items, n, p=pop / pop.sum()),
        )
        # true logit
        item_effect = rng.standard_normal(n_items)[target]
        sim = np.einsum("nd,nld->nl", vec[target], vec[hist])  # (n, L) cosine similarities
        steps_back = (L - 1) - np.arange(L)
        w = (
            (k["recency_decay"] ** steps_back)[None, :]
            * np.asarray(ACTION_WEIGHTS)[action]
            * slot_valid
        )
        affinity = (w * sim).sum(1) / w.sum(1)
        last = sim[:, -1]
        logit = (
            _standardise(item_effect, k["std_item"])
            + _standardise(affinity, k["std_affinity"])
            + _standardise(last, k["std_last"])
        )
        logit += _bias_for_rate(logit, k["base_rate"])
        prob = 1 / (1 + np.exp(-logit))
        label = (rng.random(n) < prob).astype(np.float32)
        # encode: ids from 2, 0 pads the history
        arrays = {
            "user": user + 2,
            "item": target + 2,
            "cate": cate[target] + 2,
            "hist_item": np.where(slot_valid, hist + 2, 0),
            "hist_cate": np.where(slot_valid, cate[hist] + 2, 0),
            "hist_action": np.where(slot_valid, action + 2, 0),
        }
        feats = (
            Feature("user", "categorical", vocab_size=k["n_users"] + 2, role="user"),
            Feature("item", "categorical", vocab_size=n_items + 2, role="item"),
            Feature("cate", "categorical", vocab_size=n_cat + 2, role="item"),
            Feature(
                "hist_item",
                "sequence",
                vocab_size=n_items + 2,
                table="item",
                max_len=L,
                role="user",
            ),
            Feature(
                "hist_cate",
                "sequence",
                vocab_size=n_cat + 2,
                table="cate",
                max_len=L,
                role="user",
                sequence="hist_item",
            ),
            Feature(
                "hist_action",
                "sequence",
                vocab_size=3 + 2,
                table="action",
                max_len=L,
                role="user",
                sequence="hist_item",
            ),
        )
        arrays = {n: v.astype(np.int64) for n, v in arrays.items()}
        return generated_dataset(self.name, k, feats, arrays, label, prob, group="user")
