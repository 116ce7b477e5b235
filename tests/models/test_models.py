"""Every model config in conf/model/: builds, forward/backward, shapes, learns a planted signal,
ignores left padding, names missing fields.

The list is the glob of conf/model/*.yaml, so a new model is tested the moment its config
exists. A model class declares its family (``family = "ctr" | "sequence" | "multitask" |
"retrieval"``, default ctr); ranking families are tested here (multi-task models on one label
too, and on click/conversion data for every label's head), retrieval models in
test_retrieval_models.py.
"""

from __future__ import annotations

import inspect

import pytest
import torch
from hydra.utils import instantiate
from tiny import model_class, model_family, model_names

from ranklab.config import compose
from ranklab.data import BatchLoader, RankDataModule, SyntheticCTR, SyntheticSeq
from ranklab.data.schema import Feature, Schema
from ranklab.errors import SchemaError
from ranklab.metrics import auc
from ranklab.nn import TransformerBlock

MODELS = model_names()
family = model_family


RANKING = [
    m
    for m in MODELS
    if family(m) in ("ctr", "sequence", "multitask")
    and not getattr(model_class(m), "needs_condition", False)
]
SEQUENCE = [m for m in MODELS if family(m) == "sequence"]
MULTITASK = [m for m in MODELS if family(m) == "multitask"]


def small_overrides(name: str) -> list[str]:
    """Shrink a model config (tiny widths) so the whole parametrised suite runs in seconds."""
    cfg = compose([f"model={name}"]).model
    out = []
    for key, value in (
        ("embedding_dim", 8),
        ("hidden_units", "[32,16]"),
        ("attention_units", "[16]"),
        ("num_heads", 2),
        ("dim_feedforward", 32),
        ("ranker_hidden_units", "[32]"),
        ("bottom_units", "[32]"),
        ("expert_units", "[32,16]"),
        ("tower_units", "[16]"),
        ("num_experts", 3),
    ):
        if key in cfg:
            out.append(f"model.{key}={value}")
    return out


def build(name: str, schema: Schema) -> torch.nn.Module:
    cfg = compose([f"model={name}", *small_overrides(name)]).model
    return instantiate(cfg, _partial_=True)(schema=schema)


def logits_of(out: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
    return out["logits"] if isinstance(out, dict) else out


@pytest.fixture(scope="module")
def ctr_data() -> RankDataModule:
    src = SyntheticCTR(
        n_train=8000,
        n_val=2000,
        n_test=2000,
        vocab_sizes=[20, 10, 8, 5, 5],
        n_numeric=2,
        n_pairs=3,
        pair_rank=2,
        n_triples=1,
        triple_max_vocab=8,
        seed=1,
    )
    dm = RankDataModule(src, batch_size=256)
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def seq_data() -> RankDataModule:
    src = SyntheticSeq(
        n_train=12000,
        n_val=2000,
        n_test=3000,
        n_users=3000,
        n_items=200,
        n_categories=8,
        max_len=12,
        seed=1,
    )
    dm = RankDataModule(src, batch_size=256)
    dm.setup()
    return dm


@pytest.fixture
def data_for(ctr_data: RankDataModule, seq_data: RankDataModule):
    return lambda name: seq_data if family(name) == "sequence" else ctr_data


def test_model_list_is_complete() -> None:
    assert {"lr", "fm", "dnn", "wide_deep", "deepfm", "dcn", "dcnv2"} <= set(MODELS)
    assert {"shared_bottom", "mmoe", "ple", "esmm"} <= set(MULTITASK)
    assert {family(m) for m in MODELS} <= {"ctr", "sequence", "multitask", "retrieval"}


@pytest.mark.parametrize("name", RANKING)
def test_forward_backward_shapes(name: str, data_for) -> None:
    dm = data_for(name)
    model = build(name, dm.schema)
    batch = next(iter(BatchLoader(dm.split("train"), 64)))
    out = model(batch.features)
    logits = logits_of(out)
    assert logits.shape == (64,) and logits.dtype == torch.float32
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.label)
    if isinstance(out, dict):
        loss = loss + sum(v for k, v in out.items() if k.endswith("_loss"))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", RANKING)
def test_learns_planted_signal_better_than_constant(name: str, data_for) -> None:
    dm = data_for(name)
    torch.manual_seed(0)
    model = build(name, dm.schema)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for b in [
        b for _ in range(3) for b in BatchLoader(dm.split("train"), 256, shuffle=True, seed=0)
    ]:
        opt.zero_grad()
        out = model(b.features)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits_of(out), b.label)
        if isinstance(out, dict):
            loss = loss + sum(v for k, v in out.items() if k.endswith("_loss"))
        loss.backward()
        opt.step()
    model.eval()
    test = dm.split("test")
    with torch.no_grad():
        logits = logits_of(model(test.features))
    # a constant predictor has AUC 0.5; the planted effects give far more
    assert auc(logits, test.label) > 0.62, name


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", RANKING)
def test_left_padding_changes_nothing(name: str, train: bool, seq_data: RankDataModule) -> None:
    """Histories (B, L) and the same histories with 4 fewer columns of left padding give the
    same output: the model masks padding and counts positions from the most recent event. Also
    in training (dropout off), where batch statistics (DIN's Dice) must not count padding."""
    torch.manual_seed(0)
    model = build(name, seq_data.schema).train(train)
    for m in model.modules():  # dropout off: modules', and the attention's functional one
        if isinstance(m, torch.nn.Dropout):
            m.eval()
        if isinstance(m, TransformerBlock):
            m.dropout = 0.0
    split = seq_data.split("val")
    seqs = [f.name for f in seq_data.schema.sequences]
    short = (split.features["hist_item"][:, :4] == 0).all(1)  # rows with >= 4 padding columns
    rows = short.nonzero().squeeze(1)[:64]
    assert len(rows) >= 16
    feats = {k: v[rows] for k, v in split.features.items()}
    trimmed = {k: (v[:, 4:] if k in seqs else v) for k, v in feats.items()}
    with torch.no_grad():
        a, b = logits_of(model(feats)), logits_of(model(trimmed))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", SEQUENCE)
def test_sequence_model_without_history_names_the_field(
    name: str, ctr_data: RankDataModule
) -> None:
    with pytest.raises(SchemaError, match=r"needs feature|has no sequence|history"):
        build(name, ctr_data.schema)


@pytest.mark.parametrize("name", RANKING)
def test_missing_fields_are_named(name: str) -> None:
    # only a sequence: nothing for a CTR model to embed, and no target for a sequence model
    only_seq = Schema((Feature("other_hist", "sequence", vocab_size=5, max_len=3),))
    cfg = compose([f"model={name}"]).model
    with pytest.raises(SchemaError, match=r"no categorical or numeric fields|needs feature|has no"):
        instantiate(cfg, _partial_=True)(schema=only_seq)


def test_dcnv2_variants(ctr_data: RankDataModule) -> None:
    for structure in ("stacked", "parallel"):
        for low_rank in (0, 4):
            over = [
                f"model.structure={structure}",
                f"model.low_rank={low_rank}",
                "model.hidden_units=[16]",
            ]
            m = instantiate(compose(["model=dcnv2", *over]).model, _partial_=True)(
                schema=ctr_data.schema
            )
            b = next(iter(BatchLoader(ctr_data.split("val"), 32)))
            assert m(b.features).shape == (32,)
    with pytest.raises(ValueError, match="structure"):
        cfg = compose(["model=dcnv2", "model.structure=diagonal"]).model
        instantiate(cfg, _partial_=True)(schema=ctr_data.schema)


def test_dlrm_dot_interaction_needs_two_vectors() -> None:
    """One field and no numeric ones (a libFM file read as one bag): no pair to interact, so
    the top MLP had 0 inputs and the model predicted a constant (test AUC 0.5, exit 0)."""
    from ranklab.errors import ConfigError

    one = Schema((Feature("f", "categorical", vocab_size=9),))
    cfg = compose(["model=dlrm"]).model
    with pytest.raises(ConfigError, match=r"'model.interaction': 'dot' needs two or more"):
        instantiate(cfg, _partial_=True)(schema=one)
    cat = compose(["model=dlrm", "model.interaction=cat"]).model
    assert instantiate(cat, _partial_=True)(schema=one)({"f": torch.tensor([2, 3])}).shape == (2,)


def test_dlrm_against_a_naive_reference() -> None:
    """Naumov et al.'s DLRM, written out: the bottom MLP activates every layer, the last too
    (the reference code's ``create_mlp``; ranklab's last bottom layer was linear, so the dense
    vector could be negative), then the dot product of every pair i < j of [dense, e_1, e_2],
    the dense vector beside them, into the top MLP."""
    from ranklab.models.dlrm import DLRM

    torch.manual_seed(0)
    schema = Schema(
        (
            Feature("a", "numeric"),
            Feature("b", "numeric"),
            Feature("c", "categorical", vocab_size=5),
            Feature("d", "categorical", vocab_size=7),
        )
    )
    m = DLRM(schema, 4, "dot", bottom_units=(6,), top_units=(8,), init_std=1.0).double().eval()
    for p in m.parameters():
        torch.nn.init.normal_(p)
    x = {
        "a": torch.randn(16, dtype=torch.float64),
        "b": torch.randn(16, dtype=torch.float64),
        "c": torch.randint(0, 5, (16,)),
        "d": torch.randint(0, 7, (16,)),
    }
    relu = torch.relu
    (b1, b2), (t1, t2) = (
        [layer for layer in mlp if isinstance(layer, torch.nn.Linear)] for mlp in (m.bottom, m.top)
    )
    dense = relu(b2(relu(b1(torch.stack([x["a"], x["b"]], 1)))))  # (B, D)
    emb = m.embedding(x)  # (B, 2, D)
    vecs = [dense, emb[:, 0], emb[:, 1]]
    dots = [(vecs[i] * vecs[j]).sum(1) for i in range(3) for j in range(i + 1, 3)]
    want = t2(relu(t1(torch.cat([dense, torch.stack(dots, 1)], 1)))).squeeze(1)
    assert bool((dense == 0).any()), "the weights should give some negative pre-activations"
    torch.testing.assert_close(m(x), want)


@pytest.mark.parametrize("name", MODELS)
def test_model_config_is_one_target_with_real_arguments(name: str) -> None:
    cfg = compose([f"model={name}"]).model
    params = inspect.signature(model_class(name)).parameters
    unknown = [k for k in cfg if k != "_target_" and k not in params]
    assert not unknown, f"conf/model/{name}.yaml has keys {unknown} the class does not take"


@pytest.fixture(scope="module")
def mtl_data() -> RankDataModule:
    from ranklab.data import SyntheticMTL

    src = SyntheticMTL(
        n_train=12000, n_val=2000, n_test=4000, vocab_sizes=[20, 10, 8, 5, 5], seed=1
    )
    dm = RankDataModule(src, batch_size=256)
    dm.setup()
    return dm


@pytest.mark.parametrize("name", MULTITASK)
def test_multitask_heads_train_every_label(name: str, mtl_data: RankDataModule) -> None:
    """On click/conversion data: one logit per label, each label's head gets gradients from the
    task's losses, and after a few epochs each label is ranked better than by a constant."""
    from ranklab.tasks import RankingTask

    torch.manual_seed(0)
    model = build(name, mtl_data.schema)
    task = RankingTask(model, schema=mtl_data.schema)
    batch = next(iter(BatchLoader(mtl_data.split("train"), 256, shuffle=True, seed=0)))
    out = model(batch.features)
    assert set(out) == {"click", "conversion"} and all(v.shape == (256,) for v in out.values())
    loss = sum(
        fn(out, batch.labels, mtl_data.schema.label_spec(n)) for n, fn in task.losses.items()
    )
    loss.backward()
    for label, tower in model.towers.items():
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tower.parameters()), label
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(4):
        for b in BatchLoader(mtl_data.split("train"), 256, shuffle=True, seed=0):
            opt.zero_grad()
            out = model(b.features)
            sum(
                fn(out, b.labels, mtl_data.schema.label_spec(n)) for n, fn in task.losses.items()
            ).backward()
            opt.step()
    model.eval()
    test = mtl_data.split("test")
    with torch.no_grad():
        out = model(test.features)
    clicked = test.labels["click"] > 0.5
    assert auc(out["click"], test.labels["click"]) > 0.6, name
    cvr = out["conversion"][clicked]
    assert auc(cvr, test.labels["conversion"][clicked]) > 0.6, name


def test_esmm_trains_cvr_over_every_impression(mtl_data: RankDataModule) -> None:
    from ranklab.losses import EntireSpace
    from ranklab.tasks import RankingTask

    model = build("esmm", mtl_data.schema)
    task = RankingTask(model, schema=mtl_data.schema)
    assert isinstance(task.losses["conversion"], EntireSpace)
    with pytest.raises(SchemaError, match="ESMM needs a label observed only under another"):
        build("esmm", Schema(mtl_data.schema.features, group=None))


def test_single_label_model_on_several_labels_names_the_choice(mtl_data: RankDataModule) -> None:
    from ranklab.errors import ConfigError
    from ranklab.tasks import RankingTask

    with pytest.raises(ConfigError, match=r"task\.labels.*multi-task model"):
        RankingTask(build("dnn", mtl_data.schema), schema=mtl_data.schema)
