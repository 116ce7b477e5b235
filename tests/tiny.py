"""The small synthetic instances the tests share (a module, so helpers outside conftest can
import it too)."""

from pathlib import Path

# A small synthetic instance: big enough to learn something, small enough for seconds.
TINY_DATA = [
    "data.source.n_train=6000",
    "data.source.n_val=2000",
    "data.source.n_test=2000",
    "data.source.vocab_sizes=[30,20,10,5,5]",
    "data.source.n_numeric=2",
    "data.source.n_pairs=3",
    "data.source.n_triples=1",
    "data.batch_size=512",
    "data.eval_batch_size=1024",
]


def model_names() -> list[str]:
    """Every model config in conf/model/, so a new model is tested the moment its file exists."""
    from ranklab.config import conf_dir

    return sorted(p.stem for p in (conf_dir() / "model").glob("*.yaml"))


def model_class(name: str) -> type:
    from hydra.utils import get_class

    from ranklab.config import compose

    return get_class(compose([f"model={name}"]).model._target_)


def model_family(name: str) -> str:
    """The model class's ``family``: ctr (the default), sequence, multitask or retrieval."""
    return getattr(model_class(name), "family", "ctr")


def write_markov_log(path: Path, n_users: int = 400, n_items: int = 40, seed: int = 0) -> Path:
    """`user item` lines: each user walks item -> item + 1 (mod n) with prob 0.8, else jumps."""
    import numpy as np

    rng = np.random.default_rng(seed)
    lines = []
    for u in range(n_users):
        item = int(rng.integers(n_items))
        for _ in range(int(rng.integers(5, 15))):
            lines.append(f"u{u} i{item}")
            item = (item + 1) % n_items if rng.random() < 0.8 else int(rng.integers(n_items))
    path.write_text("\n".join(lines) + "\n")
    return path
