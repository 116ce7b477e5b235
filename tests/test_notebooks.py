"""Every notebook in notebooks/ runs top to bottom on run outputs made here."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from ranklab.train import train

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path: Path, make_cfg, tmp_path: Path, monkeypatch) -> None:
    for model in ("lr", "fm"):
        extra = "model.embedding_dim=4" if model == "fm" else "trainer.max_epochs=2"
        train(make_cfg(f"model={model}", f"paths.output_dir={tmp_path}/runs/{model}", extra))
    monkeypatch.setenv("RANKLAB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("RANKLAB_NOTEBOOK_OUT", str(tmp_path))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    text = "".join(
        o.get("text", "") + str(o.get("data", {}).get("text/markdown", ""))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )
    assert "2 runs under" in text
    assert "| synthetic | LR | 1 |" in text and "| synthetic | FM | 1 |" in text
    assert (tmp_path / "curves.png").is_file()
