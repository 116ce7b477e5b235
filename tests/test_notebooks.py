"""Every notebook in notebooks/ runs top to bottom on run outputs made here (a tiny study), and
says clearly when its folder holds no runs."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from tiny import TINY_DATA

from ranklab.study import run_study

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A study of two variants x two seeds on the tiny synthetic data."""
    root = tmp_path_factory.mktemp("study")
    spec = {
        "name": "tiny",
        "base": [
            *TINY_DATA,
            "trainer.max_epochs=2",
            "threads=1",
            "logger=csv",
            f"paths.cache_dir={root}/cache",
        ],
        "variants": {"lr": ["model=lr"], "fm": ["model=fm", "model.embedding_dim=4"]},
        "seeds": [1, 2],
        "metrics": ["test/auc", "test/logloss"],
        "by": "variant",
        "digits": 5,
    }
    run_study(spec, root / "tiny", root)
    return root / "tiny"


def execute(path: Path, env: dict[str, str], monkeypatch, cwd: Path) -> str:
    """Run the notebook; return its outputs' text, with ``[image/png]`` for each inline image."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    ).execute()
    parts = []
    for cell in nb.cells:
        for o in cell.get("outputs", []) if cell.cell_type == "code" else []:
            assert o.get("output_type") != "error", o
            data = o.get("data", {})
            parts += [o.get("text", ""), str(data.get("text/markdown", ""))]
            parts += ["[image/png]"] if "image/png" in data else []
    return "\n".join(parts)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes_and_shows_figures_inline(
    path: Path, study_dir: Path, monkeypatch, tmp_path: Path
) -> None:
    env = {"RANKLAB_RUNS": str(study_dir), "RANKLAB_STUDY": str(study_dir)}
    text = execute(path, env, monkeypatch, tmp_path)
    assert "[image/png]" in text  # a figure inline, not a file
    assert not list(tmp_path.glob("*.png"))
    if path.stem == "compare_runs":
        assert "4 runs under" in text and "(2 experiments)" in text
        assert "| synthetic | LR | 2 |" in text and "| synthetic | FM | 2 |" in text
    else:
        assert "tiny: 2 variants, 4 runs" in text
        assert "| lr | LR | 2 |" in text and "| fm | FM | 2 |" in text
        assert text.count("[image/png]") == 2  # curves and the reliability diagram


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_says_when_a_folder_holds_no_runs(path: Path, monkeypatch, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    text = execute(
        path, {"RANKLAB_RUNS": str(empty), "RANKLAB_STUDY": str(empty)}, monkeypatch, tmp_path
    )
    assert f"No runs under {empty}" in text
