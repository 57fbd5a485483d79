"""notebooks/report.ipynb runs headless (nbclient) against a results file made here, and shows the tables and
at least two plots."""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from quantlab.bench import BenchConfig, bench
from quantlab.quantizer import quantize
from quantlab.spec import MethodSpec

from .conftest import REPO


@pytest.fixture(scope="module")
def results_file(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("nb")
    made = {
        name: quantize(str(tiny_model), spec, root / name)
        for name, spec in {
            "fp32": MethodSpec(method="none", dtype="fp32"),
            "w8": MethodSpec(method="rtn", bits=8, group_size=128),
            "w4": MethodSpec(method="rtn", bits=4, group_size=64),
        }.items()
    }
    results = root / "nb.jsonl"
    bench(
        [a.path for a in made.values()],
        baseline=made["fp32"].path,
        results_path=results,
        config=BenchConfig(
            dataset="embedded",
            ctx=128,
            max_tokens=512,
            batch_sizes=[1],
            prompt_tokens=16,
            new_tokens=4,
            warmup=0,
            repeats=1,
        ),
    )
    return results


def test_report_notebook_executes_with_tables_and_plots(results_file, monkeypatch):
    monkeypatch.setenv("QUANTLAB_RESULTS", str(results_file))
    notebook = nbformat.read(REPO / "notebooks" / "report.ipynb", as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO / "notebooks")}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    markdown = "\n".join(o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {}))
    assert len(images) >= 2
    assert "w4 g64 sym" in markdown and "KLD" in markdown and "$/1M tokens" in markdown
    assert "best for (measured here)" in markdown and "quality %" in markdown
