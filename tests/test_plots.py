"""The report's plots, drawn from committed results: the right plots appear, they are PNGs, and the same
results give the same bytes."""

from __future__ import annotations

from quantlab.report import html, plots, select
from quantlab.results import read_results

from .conftest import REPO


def _records(name: str):
    return select(read_results(REPO / "results" / f"{name}.jsonl"))


def test_pareto_keeps_only_undominated_points():
    points = [(100, 0.5), (120, 0.2), (110, 0.6), (160, 0.02), (170, 0.03), (270, 0.001)]
    assert plots.pareto(points) == [(100, 0.5), (120, 0.2), (160, 0.02), (270, 0.001)]


def test_quality_and_cost_plots_from_measured_formats():
    records = _records("fp-formats-smollm2")
    images = plots.render_all(records)
    assert set(images) == {"quality-vs-size", "cost-vs-quality"}  # no served runs in this file
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in images.values())
    assert plots.render_all(records) == images  # deterministic


def test_throughput_plot_and_the_pages_svg_plots():
    records = _records("fp-formats-smollm2") + _records("served-smollm2")
    assert "throughput-vs-concurrency" in plots.render_all(records)
    page = html(records)  # the page draws the same plots as SVG, and TTFT vs throughput where served runs hold it
    assert page.count('<svg class="chart"') == 4 and "<h2>Plots</h2>" in page
    for name in ("quality-vs-size", "cost-vs-quality", "throughput-vs-concurrency", "ttft-vs-throughput"):
        assert f'id="plot-{name}"' in page


def test_nothing_to_plot_gives_no_plot():
    assert plots.render_all([]) == {}
