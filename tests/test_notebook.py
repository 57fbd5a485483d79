"""notebooks/report.ipynb runs headless (nbclient) against the tiny model's benched results file (conftest
`tiny_benched`), and shows the tables and at least two plots."""

from __future__ import annotations

import nbformat
from nbclient import NotebookClient

from .conftest import REPO


def test_report_notebook_executes_with_tables_and_plots(tiny_benched, monkeypatch):
    monkeypatch.setenv("QUANTLAB_RESULTS", str(tiny_benched[1]))  # fp32, w8, w4 of the tiny model, benched
    notebook = nbformat.read(REPO / "notebooks" / "report.ipynb", as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO / "notebooks")}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    markdown = "\n".join(o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {}))
    assert len(images) >= 2
    assert "w4 g64 asym" in markdown and "KLD" in markdown and "$/1M tokens" in markdown
    assert "best for (measured here)" in markdown and "quality %" in markdown
