"""Retrieval family (SASRec and baselines), leave-one-out data, ranking metrics, the task."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from hydra.utils import instantiate
from tiny import model_family, model_names, write_markov_log

from ranklab.compare import compare
from ranklab.config import compose
from ranklab.data import RankDataModule, UserSequences
from ranklab.data.sequences import sample_negatives
from ranklab.errors import ConfigError
from ranklab.metrics import RankingMetrics, n_rivals, per_user_metrics, target_ranks
from ranklab.models.sasrec import ReferenceBlock, SASRec
from ranklab.task import RetrievalTask, bucket_labels
from ranklab.train import train

RETRIEVAL = [m for m in model_names() if model_family(m) == "retrieval"]


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("seqdata") / "markov"
    d.mkdir()
    write_markov_log(d / "log.txt")
    return d


def source(log_dir: Path, **kw) -> UserSequences:
    return UserSequences(
        events={"path": str(log_dir / "log.txt"), "format": "interactions"},
        user="user",
        item="item",
        time="timestamp",
        max_len=kw.pop("max_len", 8),
        n_eval_negatives=10,
        **kw,
    )


def test_leave_one_out_split_matches_per_user_loop(log_dir: Path) -> None:
    data = source(log_dir, max_len=4).build()
    lines = [ln.split() for ln in (log_dir / "log.txt").read_text().split("\n") if ln]
    by_user: dict[str, list[str]] = {}
    for u, i in lines:
        by_user.setdefault(u, []).append(i)
    users = sorted(by_user)  # dense rank order of the user column (strings)
    values = ["<pad>", "<oov>", *TabularVocab(lines)]
    ids = {v: k for k, v in enumerate(values)}
    for split, back in (("train", 2), ("val", 1), ("test", 0)):
        arr = data.splits[split]
        for row, u in enumerate(users):
            seq = [ids[i] for i in by_user[u]]
            t = len(seq) - 1 - back
            hist = seq[:t][-4:]
            assert arr["target"][row] == seq[t]
            assert arr["history"][row].tolist() == [0] * (4 - len(hist)) + hist
            lo, hi = arr["seen.offsets"][row], arr["seen.offsets"][row + 1]
            assert arr["seen.values"][lo:hi].tolist() == seq[:t]  # ragged: as long as the user
            assert not set(arr["neg_uniform"][row].tolist()) & set(seq[: t + 1])
            assert len(set(arr["neg_popularity"][row].tolist())) == 10


def TabularVocab(lines: list[list[str]]) -> list[str]:
    from collections import Counter

    counts = Counter(i for _, i in lines)
    return sorted(counts, key=lambda v: (-counts[v], v))


def test_sample_negatives_excludes_and_is_distinct() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 7, 200)  # ragged exclusion sets, empty ones included
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    values = rng.integers(2, 30, offsets[-1])
    neg = sample_negatives(rng, np.arange(30, dtype=float), values, offsets, 12)
    for r, row in enumerate(neg):
        ex = set(values[offsets[r] : offsets[r + 1]])
        assert len(set(row)) == 12 and not set(row) & ex and row.min() >= 2
    with pytest.raises(ConfigError, match="n_eval_negatives"):
        sample_negatives(rng, np.ones(10), values, offsets, 20)


def test_ranking_metrics_match_definitions() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.5, float("-inf")], [0.3, 0.3, 0.2, 0.0]])
    target_score = torch.tensor([0.5, 0.3])
    ranks = target_ranks(scores, target_score)
    assert ranks.tolist() == [2, 2]  # ties (0.5 and 0.3) count against the target
    assert n_rivals(scores).tolist() == [3, 4]  # -inf entries are excluded candidates
    m = RankingMetrics((2, 3))
    m.update(torch.tensor([0, 2]), torch.tensor([10, 4]))
    m.update(torch.tensor([5]), 10)
    out = {k: float(v) for k, v in m.compute().items()}
    assert out["auc"] == pytest.approx((1 + 0.5 + 0.5) / 3)  # share of rivals below target
    assert out["hr@2"] == pytest.approx(1 / 3) and out["hr@3"] == pytest.approx(2 / 3)
    assert out["ndcg@3"] == pytest.approx((1 + 1 / math.log2(4)) / 3)
    assert out["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 6) / 3)


def build(name: str, dm: RankDataModule) -> torch.nn.Module:
    over = ["model.embedding_dim=16"] if "embedding_dim" in compose([f"model={name}"]).model else []
    return instantiate(compose([f"model={name}", *over]).model, _partial_=True)(schema=dm.schema)


@pytest.mark.parametrize("name", RETRIEVAL)
def test_retrieval_model_shapes_and_left_padding(name: str, log_dir: Path) -> None:
    dm = RankDataModule(source(log_dir), batch_size=64)
    model = build(name, dm).eval()
    split = dm.split("test")
    h = split.features["history"][:32]
    states = model.encode(h)
    assert (
        states.shape[:2] == (32, h.shape[1])
        and model.item_embeddings().shape[0] == dm.schema.tables["item"]
    )
    wide = torch.cat([torch.zeros(32, 3, dtype=h.dtype), h], 1)  # 3 more columns of left padding
    with torch.no_grad():
        a = model({"history": h, "target": split.features["target"][:32]})
        b = model({"history": wide[:, 3:], "target": split.features["target"][:32]})
        c = model.encode(h)[:, -1]
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(
        a, (c * model.item_embeddings()[split.features["target"][:32]]).sum(-1)
    )


def markov_overrides(log_dir: Path, tmp_path: Path, negatives: int = 10) -> list[str]:
    """The Markov log as next-item data (``experiment=beauty_sasrec``'s source), small."""
    return [
        f"paths.data_dir={log_dir.parent}",
        f"paths.cache_dir={tmp_path}/cache",
        "trainer.enable_progress_bar=false",
        "print_summary=false",
        "data.source.events.path=" + str(log_dir / "log.txt"),
        "data.source.max_len=8",
        f"data.source.n_eval_negatives={negatives}",
        "data.batch_size=64",
        "threads=1",
    ]


@pytest.mark.parametrize("loss", ["bce", "sampled_softmax", "full_ce"])
def test_sasrec_learns_the_markov_chain_with_every_loss(
    loss: str, log_dir: Path, tmp_path: Path
) -> None:
    base = markov_overrides(log_dir, tmp_path)
    common = [
        "experiment=beauty_sasrec",
        *base,
        "model.embedding_dim=16",
        "trainer.max_epochs=15",
        "task.num_negatives=10",
        "optimizer.lr=0.005",
    ]
    sas = train(compose([*common, f"task.loss={loss}", f"paths.output_dir={tmp_path}/sas"]))
    pop = train(
        compose(
            ["experiment=beauty_sasrec", *base, "model=poprec", f"paths.output_dir={tmp_path}/pop"]
        )
    )
    assert (
        sas["protocol"]["loss"] == loss
        and sas["protocol"]["sampled"]["distribution"] == "popularity"
    )
    for mode in ("full", "sampled"):
        assert sas["test"][f"{mode}/ndcg@10"] > pop["test"][f"{mode}/ndcg@10"] + 0.1, (
            mode,
            sas["test"],
            pop["test"],
        )


def test_task_model_family_mismatch_is_named(log_dir: Path) -> None:
    dm = RankDataModule(source(log_dir), batch_size=64)
    from ranklab.task import RankingTask

    with pytest.raises(ConfigError, match="choose task=retrieval"):
        RankingTask(build("sasrec", dm))


def naive_sasrec(model, items: list[int]) -> torch.Tensor:
    """SASRec's states (T, D) for one unpadded history, written step by step from the paper
    (``pre_norm``: x + f(LN(x))) or from the authors' released code (``reference``: LN on the
    queries only, residual from the normalised queries, LN before the feed-forward network)."""
    D, T, H = model.scale**2, len(items), model.num_heads
    x = model.embedding.lookup(torch.tensor(items), model.table) * model.scale
    x = x + model.position.weight[torch.arange(T - 1, -1, -1)]  # most recent item: position 0

    def attend(attn: torch.nn.MultiheadAttention, q_in, kv_in) -> torch.Tensor:
        w_q, w_k, w_v = attn.in_proj_weight.chunk(3)
        b_q, b_k, b_v = attn.in_proj_bias.chunk(3)
        q, k, v = q_in @ w_q.T + b_q, kv_in @ w_k.T + b_k, kv_in @ w_v.T + b_v
        d = int(D) // H
        out = torch.zeros(T, int(D))
        for h in range(H):
            s = slice(h * d, (h + 1) * d)
            for t in range(T):  # step t attends to steps 0..t
                w = torch.softmax(q[t, s] @ k[: t + 1, s].T / d**0.5, 0)
                out[t, s] = w @ v[: t + 1, s]
        return out @ attn.out_proj.weight.T + attn.out_proj.bias

    for block in model.blocks:
        if isinstance(block, ReferenceBlock):
            q = block.attn_norm(x)
            x = q + attend(block.attn, q, x)
            h = block.ffn_norm(x)
            x = h + block.ffn[3](torch.relu(block.ffn[0](h)))
        else:
            n = block.norm1(x)
            x = x + attend(block.self_attn, n, n)
            n = block.norm2(x)
            x = x + block.linear2(torch.relu(block.linear1(n)))
    return model.norm(x)


@pytest.mark.parametrize("layout", ["pre_norm", "reference"])
def test_sasrec_blocks_match_a_step_by_step_reference(layout: str, log_dir: Path) -> None:
    dm = RankDataModule(source(log_dir), batch_size=64)
    model = SASRec(dm.schema, embedding_dim=8, num_heads=2, layout=layout, init_std=0.3).eval()
    for p in model.parameters():  # non-trivial biases and norms
        torch.nn.init.normal_(p, std=0.3)
    h = dm.split("test").features["history"][:12]
    with torch.no_grad():
        states = model.encode(h)
        for row in range(len(h)):
            items = [int(i) for i in h[row] if i]
            got = states[row, h.shape[1] - len(items) :]
            torch.testing.assert_close(got, naive_sasrec(model, items), atol=1e-5, rtol=1e-4)
            assert not states[row, : h.shape[1] - len(items)].any()  # padded steps are zero


def test_sasrec_unknown_layout_names_the_key(log_dir: Path) -> None:
    dm = RankDataModule(source(log_dir), batch_size=64)
    with pytest.raises(ConfigError, match=r"model\.layout"):
        SASRec(dm.schema, layout="post_norm")


def test_metrics_by_history_length_partition_the_users(log_dir: Path, tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from ranklab.evaluate import evaluate

    run = tmp_path / "run"
    trained = train(
        compose(
            [
                "experiment=beauty_sasrec",
                f"paths.data_dir={log_dir.parent}",
                f"paths.cache_dir={tmp_path}/cache",
                f"paths.output_dir={run}",
                "trainer.enable_progress_bar=false",
                "print_summary=false",
                "data.source.events.path=" + str(log_dir / "log.txt"),
                "data.source.max_len=8",
                "data.source.n_eval_negatives=10",
                "model.embedding_dim=16",
                "trainer.max_epochs=2",
                "task.num_negatives=10",
                "threads=1",
            ]
        )
    )
    cfg = OmegaConf.load(run / "config.yaml")  # a run trained before the option existed
    del cfg.task["length_buckets"]
    OmegaConf.save(cfg, run / "config.yaml")
    with pytest.raises(ConfigError, match=r"task\.length_buckets.*prefix '\+'"):
        evaluate(run, ["task.length_buckets=[5,8]"])
    out = evaluate(run, ["+task.length_buckets=[5,8]"])
    test = out["test"]
    labels = bucket_labels([5, 8])
    assert labels == ["len<=5", "len6-8", "len>8"] and out["protocol"]["length_buckets"] == labels
    lengths = (source(log_dir).build().splits["test"]["history"] != 0).sum(1)
    counts = [int((lengths <= 5).sum()), int(((lengths > 5) & (lengths <= 8)).sum())]
    assert [test[f"{b}/users"] for b in labels[:2]] == counts and "len>8/users" not in test
    for m in ("full", "sampled"):  # the buckets' user-weighted means give the overall metric
        for k in ("ndcg@10", "hr@5", "mrr", "auc"):
            assert test[f"{m}/{k}"] == pytest.approx(trained["test"][f"{m}/{k}"], abs=1e-6)
            pooled = sum(test[f"{m}/{b}/{k}"] * test[f"{b}/users"] for b in labels[:2])
            assert pooled / sum(counts) == pytest.approx(test[f"{m}/{k}"], rel=1e-9)
    # per-user ranks beside the evaluation: their means are the metrics, in data order
    users = pl.read_parquet(out["users_file"], glob=False)
    assert users["history_len"].to_list() == lengths.tolist()
    item_counts = source(log_dir).build().schema.meta["item_counts"]
    assert users["target_train_count"].to_list() == [item_counts[t] for t in users["target"]]
    for m in ("full", "sampled"):
        per_user = per_user_metrics(
            torch.from_numpy(users[f"{m}_rank"].to_numpy(writable=True)),
            torch.from_numpy(users[f"{m}_candidates"].to_numpy(writable=True)),
        )
        for k in ("ndcg@10", "hr@5", "mrr", "auc"):
            assert float(per_user[k].mean()) == pytest.approx(test[f"{m}/{k}"], rel=1e-9)
    same = compare(Path(out["users_file"]), Path(out["users_file"]), ["full/ndcg@10"], [5, 8])
    assert same["diff"].to_list() == [0.0] * 3 and same["users"].to_list() == [
        len(lengths),
        *counts,
    ]


def test_length_buckets_must_increase(log_dir: Path) -> None:
    dm = RankDataModule(source(log_dir), batch_size=64)
    with pytest.raises(ConfigError, match=r"task\.length_buckets"):
        RetrievalTask(build("sasrec", dm), schema=dm.schema, length_buckets=(5, 5))


def test_an_out_of_vocabulary_target_is_a_miss_and_is_not_trained_on(
    log_dir: Path, tmp_path: Path
) -> None:
    """With min_count > 1 rare items share the OOV id: as a target it is a miss (the shared
    OOV row's score counted as retrieving it, and inflated HR/NDCG), and positions whose next
    item is OOV are not trained on (full_ce indexed it at -1 and crashed)."""
    import polars as pl

    base = [
        *markov_overrides(log_dir, tmp_path, negatives=3),
        "data.source.min_count=75",  # the rarer of the 40 items become OOV
        "data.source.catalog=train",
        "experiment=beauty_sasrec",
        "model.embedding_dim=16",
        "trainer.max_epochs=1",
        "task.loss=full_ce",
        f"paths.output_dir={tmp_path}/run",
    ]
    m = train(compose(base))
    from ranklab.evaluate import evaluate

    out = evaluate(tmp_path / "run", [])
    users = pl.read_parquet(out["users_file"])
    oov = users.filter(pl.col("target") == 1)
    assert oov.height > 0, "the test needs OOV targets"
    assert (oov["full_rank"] == oov["full_candidates"]).all()  # ranked below every candidate
    assert (oov["sampled_rank"] == oov["sampled_candidates"]).all()
    # the metrics are those of the users file: an OOV target adds a miss, not a hit
    hits = (users["full_rank"] < 10).cast(pl.Float64).mean()
    assert m["test"]["full/hr@10"] == pytest.approx(hits)


def test_the_retrieval_task_on_labelled_rows_is_named(tmp_path: Path) -> None:
    """task=retrieval on sequence-ranking data (labelled rows with histories) was a KeyError
    ('seen') at the first step."""
    cfg = compose(
        [
            "data=synthetic_seq",
            "data.source.n_users=200",
            "model=sasrec",
            "task=retrieval",
            f"paths.output_dir={tmp_path}/run",
            f"paths.cache_dir={tmp_path}/cache",
            "print_summary=false",
        ]
    )
    with pytest.raises(ConfigError, match=r"'task': the retrieval task trains on next-item"):
        train(cfg)


def test_a_ranking_model_on_next_item_data_is_named(log_dir: Path, tmp_path: Path) -> None:
    """A ranking model on user histories without labels was an IndexError at the first step."""
    cfg = compose(
        [
            "data=beauty_seq",
            f"paths.data_dir={log_dir.parent}",
            f"paths.cache_dir={tmp_path}/cache",
            "data.source.events.path=" + str(log_dir / "log.txt"),
            "data.source.n_eval_negatives=10",
            "model=deepfm",
            "task=ranking",
            f"paths.output_dir={tmp_path}/run",
            "print_summary=false",
        ]
    )
    with pytest.raises(ConfigError, match=r"'task': the data has no labels to rank by"):
        train(cfg)
