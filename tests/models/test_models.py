"""Every model config in conf/model/: builds, forward/backward, shapes, learns a planted signal.

The list is the glob of conf/model/*.yaml, so a new model is tested the moment its config exists.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from ranklab.config import compose, conf_dir
from ranklab.data import BatchLoader, RankDataModule, SyntheticCTR
from ranklab.errors import SchemaError
from ranklab.metrics import auc

MODELS = sorted(p.stem for p in (conf_dir() / "model").glob("*.yaml"))


def small_overrides(name: str) -> list[str]:
    """Shrink a model config: tiny widths, so the whole parametrised suite runs in seconds."""
    cfg = compose([f"model={name}"]).model
    out = []
    if "embedding_dim" in cfg:
        out.append("model.embedding_dim=8")
    if "hidden_units" in cfg:
        out.append("model.hidden_units=[32,16]")
    return out


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
        std_first=1.0,
        std_pairs=1.0,
        std_triples=0.5,
        seed=1,
    )
    dm = RankDataModule(src, batch_size=256)
    dm.setup()
    return dm


def build(name: str, schema) -> torch.nn.Module:
    cfg = compose([f"model={name}", *small_overrides(name)]).model
    return instantiate(cfg, _partial_=True)(schema=schema)


def test_model_list_is_complete() -> None:
    assert {"lr", "fm", "dnn", "wide_deep", "deepfm", "dcn", "dcnv2"} <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_forward_backward_shapes(name: str, ctr_data: RankDataModule) -> None:
    model = build(name, ctr_data.schema)
    batch = next(iter(BatchLoader(ctr_data.split("train"), 64)))
    out = model(batch.features)
    logits = out["logits"] if isinstance(out, dict) else out
    assert logits.shape == (64,) and logits.dtype == torch.float32
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.label)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", MODELS)
def test_learns_planted_signal_better_than_constant(name: str, ctr_data: RankDataModule) -> None:
    torch.manual_seed(0)
    model = build(name, ctr_data.schema)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loader = BatchLoader(ctr_data.split("train"), 256, shuffle=True, seed=0)
    model.train()
    for _ in range(4):
        for b in loader:
            opt.zero_grad()
            out = model(b.features)
            logits = out["logits"] if isinstance(out, dict) else out
            torch.nn.functional.binary_cross_entropy_with_logits(logits, b.label).backward()
            opt.step()
    model.eval()
    test = ctr_data.split("test")
    with torch.no_grad():
        out = model(test.features)
        logits = out["logits"] if isinstance(out, dict) else out
    # a constant predictor has AUC 0.5; the planted first-order effects alone give far more
    assert auc(logits, test.label) > 0.62, name


@pytest.mark.parametrize("name", MODELS)
def test_missing_field_is_named(name: str) -> None:
    from ranklab.data.schema import Feature, Schema

    # only a sequence: nothing for a CTR model to embed, and no history for a sequence model
    # unless it is the one named; either way the error names what is missing
    only_seq = Schema((Feature("other_hist", "sequence", vocab_size=5, max_len=3),))
    cfg = compose([f"model={name}"]).model
    with pytest.raises(SchemaError, match=r"no categorical or numeric fields|needs feature"):
        instantiate(cfg, _partial_=True)(schema=only_seq)


def test_dcnv2_variants(ctr_data: RankDataModule) -> None:
    for structure in ("stacked", "parallel"):
        for low_rank in (0, 4):
            cfg = compose(
                [
                    "model=dcnv2",
                    f"model.structure={structure}",
                    f"model.low_rank={low_rank}",
                    "model.hidden_units=[16]",
                ]
            ).model
            m = instantiate(cfg, _partial_=True)(schema=ctr_data.schema)
            b = next(iter(BatchLoader(ctr_data.split("val"), 32)))
            assert m(b.features).shape == (32,)
    with pytest.raises(ValueError, match="structure"):
        instantiate(compose(["model=dcnv2", "model.structure=diagonal"]).model, _partial_=True)(
            schema=ctr_data.schema
        )


def test_model_configs_are_one_target_with_real_arguments() -> None:
    import inspect

    for name in MODELS:
        cfg = compose([f"model={name}"]).model
        cls = instantiate({"_target_": "hydra.utils.get_class", "path": cfg._target_})
        params = inspect.signature(cls).parameters
        unknown = [k for k in cfg if k != "_target_" and k not in params]
        assert not unknown, (
            f"conf/model/{name}.yaml has keys {unknown} that {cls.__name__} does not take"
        )
        assert Path(conf_dir() / "model" / f"{name}.yaml").is_file()
