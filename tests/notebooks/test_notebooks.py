"""Every notebook in notebooks/ runs top to bottom on CPU, so none can rot."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
# Notebooks that train several models even when shortened (4 min on 2 loaded cores): the
# slow tier runs them.
SLOW = {"text_to_image.ipynb"}


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, marks=pytest.mark.slow) if p.name in SLOW else p for p in NOTEBOOKS],
    ids=lambda p: p.name,
)
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_NOTEBOOK_WORKDIR", str(tmp_path / "run"))
    monkeypatch.setenv("ZOO_NOTEBOOK_TINY", "1")  # notebooks that train long runs shorten them
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    errors = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 2  # the sample grid and the loss curve
