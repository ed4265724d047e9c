"""notebooks/quickstart.ipynb runs top to bottom on the CPU (on a tiny demo checkpoint)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.explain_helpers import tiny_checkpoint

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.slow
def test_quickstart_notebook_executes(tmp_path_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("LCAM_CKPT", str(tiny_checkpoint(tmp_path_factory)))  # skip the notebook's own training
    monkeypatch.setenv("LCAM_OUT", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    start = time.perf_counter()
    # the kernel starts in notebooks/ (as in Jupyter); the notebook finds the repository root itself
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    seconds = time.perf_counter() - start
    print(f"quickstart notebook executed in {seconds:.1f} s")
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]  # (an error cell raises in execute())
    images = [o for o in outputs if o.output_type in ("display_data", "execute_result") and "image/png" in o.get("data", {})]
    assert len(images) == 5  # explain grid, top-k, class-specific, misclassification, comparison
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "same top-1 classes as L-CAM: True" in text
    assert "layer='bn2'" in text  # the printed result says which layer it explains
    assert len(list((tmp_path / "explained").glob("*_lcam.png"))) == 9
    assert os.environ["LCAM_CKPT"] in text
