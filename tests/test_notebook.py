"""notebooks/report.ipynb runs headless (nbclient) against the tiny model's benched results file (conftest
`tiny_benched`): it opens on `quantlab recommend`'s answer for its default settings, word for word, and shows the
report page's charts (SVG), tables, footnotes and the page itself."""

from __future__ import annotations

import nbformat
from nbclient import NotebookClient

from quantlab.report import select
from quantlab.report.recommend import explain, recommend
from quantlab.results import read_results

from .conftest import REPO


def _text(output) -> str:
    return output.get("text", "") if output.output_type == "stream" else output.get("data", {}).get("text/plain", "")


def test_report_notebook_answers_and_shows_the_pages_pieces(tiny_benched, monkeypatch):
    monkeypatch.setenv("QUANTLAB_RESULTS", str(tiny_benched[1]))  # fp32, w8, w4 of the tiny model, benched
    notebook = nbformat.read(REPO / "notebooks" / "report.ipynb", as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO / "notebooks")}}
    ).execute()
    cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    outputs = [o for cell in cells for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]

    # The answer, as `quantlab recommend` gives it for the notebook's defaults, in the cell after the settings.
    records = select(read_results(tiny_benched[1]))
    (rig,) = {r.rig.name for r in records}
    rec = recommend(records, rig=rig, min_quality=97.0, max_memory_gb=None, basis="decode", at=1)
    expected = explain(rec, rig=rig, min_quality=97.0, max_memory_gb=None, at=1)
    settings = next(i for i, cell in enumerate(cells) if cell.source.startswith("RIG = "))
    answer = "\n".join(_text(o) for o in cells[settings + 1].outputs)
    assert expected in answer
    verdict = [line for line in expected.split("\n") if line.startswith(("Recommended on", "No format on"))]
    assert len(verdict) == 1 and verdict[0] in answer
    markdown = cells[settings + 1].outputs[0]["data"]["text/markdown"]
    assert "\\$" in markdown  # a pair of "$" in one line would be typeset as math

    html = "\n".join(o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {}))
    assert html.count('<svg class="chart"') >= 2  # quality vs size and cost vs quality
    assert "w4 g64 asym" in html and "KLD" in html and "$/1M tokens" in html
    assert "best for (measured here)" in html and "quality %" in html
    assert "How these numbers were made" in html and "Libraries: " in html
    assert 'class="notes" hidden' not in html.split("<iframe")[0]  # no script here to unfold a row's notes
    assert html.count("<iframe srcdoc=") == 1 and "IFrame" not in "".join(o.get("text", "") for o in outputs)
