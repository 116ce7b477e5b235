"""How close can a model get to the Bayes ceiling of ``data=synthetic_seq`` with this much data?

The Bayes-optimal AUC uses the true probabilities; a learner must estimate the item vectors,
the item effects and the recency/action weights from ``n_train`` noisy clicks. This script
trains a *structure-matched* model, one that knows the generator's functional form:

    logit = b_item(t) + sum_l softmax(pos_l + act(a_l)) <u(t), u(h_l)> + <v(t), v(h_last)> + c

with u(i) = E[i] + C[cate(i)] and v(i) = F[i] + C'[cate(i)] learned (D = the generator's dim).
Its test AUC is the learnable ceiling at this sample size: if it sits far below the Bayes AUC,
no architecture can close the gap and the data, not the model, is what to change.

    .venv/bin/python benchmarks/seq_ceiling.py                      # the configured data
    .venv/bin/python benchmarks/seq_ceiling.py n_items=1000 item_spread=0.7

Arguments are ``key=value`` overrides of ``conf/data/synthetic_seq.yaml``'s ``source``.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import Tensor, nn

from ranklab.config import compose
from ranklab.data import BatchLoader, RankDataModule
from ranklab.metrics import auc


class StructureMatched(nn.Module):
    """The generator's logit with learned item vectors, item effects and step weights."""

    def __init__(self, n_items: int, n_cats: int, dim: int, max_len: int) -> None:
        super().__init__()
        self.u, self.v = nn.Embedding(n_items, dim), nn.Embedding(n_items, dim)
        self.cu, self.cv = nn.Embedding(n_cats, dim), nn.Embedding(n_cats, dim)
        for e in (self.u, self.v, self.cu, self.cv):
            nn.init.normal_(e.weight, std=0.1)
        self.bias = nn.Embedding(n_items, 1)
        nn.init.zeros_(self.bias.weight)
        self.pos = nn.Parameter(torch.zeros(max_len))  # index 0 = most recent
        self.act = nn.Embedding(8, 1)
        self.c = nn.Parameter(torch.zeros(1))

    def forward(self, f: dict[str, Tensor]) -> Tensor:
        """f: item, cate (B,); hist_item, hist_cate, hist_action (B, L) left-padded -> (B,)."""
        h, t, mask = f["hist_item"], f["item"], f["hist_item"] != 0
        steps = self.pos[: h.shape[1]].flip(0)[None] + self.act(f["hist_action"]).squeeze(-1)
        w = torch.softmax(steps.masked_fill(~mask, -1e9), 1) * mask
        ut = self.u(t) + self.cu(f["cate"])  # (B, D)
        uh = self.u(h) + self.cu(f["hist_cate"])  # (B, L, D)
        sim = (ut[:, None] * uh).sum(-1)  # (B, L)
        last = (
            (self.v(t) + self.cv(f["cate"])) * (self.v(h[:, -1]) + self.cv(f["hist_cate"][:, -1]))
        ).sum(-1)
        return self.bias(t).squeeze(-1) + (w * sim).sum(1) + last + self.c

    def l2(self) -> Tensor:
        return sum(e.weight.pow(2).sum() for e in (self.u, self.v, self.cu, self.cv, self.bias))


def main(argv: list[str] | None = None) -> tuple[float, float]:
    """Train, print the per-epoch AUCs, return (test AUC at the best val epoch, Bayes AUC)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("overrides", nargs="*", help="key=value for data.source")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--l2", type=float, default=1e-5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=1024)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfg = compose(["data=synthetic_seq", *[f"data.source.{o}" for o in a.overrides]])
    src = instantiate(cfg.data.source)
    dm = RankDataModule(src, batch_size=1024)
    dm.setup()
    s = src.kw
    torch.manual_seed(a.seed)
    model = StructureMatched(s["n_items"] + 2, s["n_categories"] + 2, s["dim"], s["max_len"])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    val, test = dm.split("val"), dm.split("test")
    best = (0.0, 0.0, -1)
    for ep in range(a.epochs):
        for b in BatchLoader(dm.split("train"), a.batch_size, shuffle=True, seed=a.seed + ep):
            opt.zero_grad()
            loss = F.binary_cross_entropy_with_logits(model(b.features), b.label)
            (loss + a.l2 * model.l2()).backward()
            opt.step()
        with torch.no_grad():
            v, t = auc(model(val.features), val.label), auc(model(test.features), test.label)
        if v > best[0]:
            best = (v, t, ep)
        print(f"epoch {ep}: val auc {v:.4f}  test auc {t:.4f}", flush=True)
    bayes = dm.schema.meta["bayes"]["test"]["auc"]
    print(
        f"structure-matched model: test AUC {best[1]:.4f} at its best val epoch {best[2]}; "
        f"Bayes-optimal {bayes:.4f}; gap {bayes - best[1]:.4f}"
    )
    return best[1], bayes


if __name__ == "__main__":
    main()
