"""The HTML report page without a browser: its precomputed answers are `quantlab recommend`'s for every control
value, its sort keys read the numbers the tables print, and the page is one deterministic, offline file."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantlab.report import html, select
from quantlab.report.page import answer, charts
from quantlab.report.page.tables import best_rows, marks, single, sort_key
from quantlab.report.recommend import explain, recommend
from quantlab.report.sections import sections
from quantlab.report.tables import fmt, kld
from quantlab.results import read_results

from .conftest import REPO

DEMO_CPU = REPO / "results" / "demo-cpu.jsonl"


@pytest.fixture(scope="module")
def demo():
    return select(read_results(DEMO_CPU))


@pytest.fixture(scope="module")
def data(demo):
    return answer.answers(demo)


def _same_answer(a, b) -> bool:
    return (a.winner, a.runner_up, a.considered, [label for label, _ in a.excluded]) == (
        b.winner,
        b.runner_up,
        b.considered,
        [label for label, _ in b.excluded],
    )


def test_the_demo_offers_every_operating_point_it_priced(data):
    points = [(e["basis"], e["at"]) for e in data["rigs"]["cpu"]]
    assert points == [("decode", 1), ("decode", 8), ("served", 1), ("served", 8), ("served", 32)]


@pytest.mark.parametrize(
    ("basis", "at", "floor", "mem"),
    [
        ("decode", 1, 0.0, None),
        ("decode", 1, 99.5, None),
        ("decode", 1, 96.0, 0.8),
        ("decode", 8, 90.0, 1.2),
        ("served", 8, 0.0, None),
        ("served", 1, 50.0, 0.5),
        ("decode", 1, 100.05, None),  # above every candidate: no format
    ],
)
def test_the_lookup_is_recommend_at_an_equivalent_setting(demo, data, basis, at, floor, mem):
    text, rep_floor, rep_mem = answer.lookup(data, "cpu", basis, at, floor, mem)
    direct = recommend(demo, rig="cpu", min_quality=floor, max_memory_gb=mem, basis=basis, at=at)
    shown = recommend(demo, rig="cpu", min_quality=rep_floor, max_memory_gb=rep_mem, basis=basis, at=at)
    assert _same_answer(direct, shown)
    assert text == explain(shown, rig="cpu", min_quality=rep_floor, max_memory_gb=rep_mem, at=at)


def test_at_a_representative_the_text_is_recommends_word_for_word(demo, data):
    winners = set()
    for entry in data["rigs"]["cpu"]:
        basis, at = entry["basis"], entry["at"]
        for floor in entry["floors"]:
            for mem in (None, entry["mems"][-2]):
                text, _, _ = answer.lookup(data, "cpu", basis, at, floor, mem)
                rec = recommend(demo, rig="cpu", min_quality=floor, max_memory_gb=mem, basis=basis, at=at)
                assert text == explain(rec, rig="cpu", min_quality=floor, max_memory_gb=mem, at=at)
                winners.add(rec.winner.label if rec.winner else None)
    assert len(winners) >= 3  # the floor moves the answer


@settings(max_examples=150, deadline=None)
@given(
    st.floats(min_value=-5, max_value=110, allow_nan=False),
    st.one_of(st.none(), st.floats(min_value=0, max_value=2.5, allow_nan=False)),
    st.sampled_from([("decode", 1), ("decode", 8), ("served", 32)]),
)
def test_every_control_value_gets_recommends_answer(demo, data, floor, mem, point):
    basis, at = point
    _, rep_floor, rep_mem = answer.lookup(data, "cpu", basis, at, floor, mem)
    direct = recommend(demo, rig="cpu", min_quality=floor, max_memory_gb=mem, basis=basis, at=at)
    shown = recommend(demo, rig="cpu", min_quality=rep_floor, max_memory_gb=rep_mem, basis=basis, at=at)
    assert _same_answer(direct, shown)


@given(st.lists(st.floats(min_value=0, max_value=200, allow_nan=False), min_size=1, max_size=8))
def test_floor_classes_put_each_representative_in_its_own_class(qualities):
    thresholds, reps = answer.floor_classes(qualities)
    assert [sum(1 for q in thresholds if q < rep) for rep in reps] == list(range(len(thresholds) + 1))


@given(st.lists(st.integers(min_value=1, max_value=10**12), min_size=1, max_size=8))
def test_memory_classes_put_each_representative_in_its_own_class(memories):
    thresholds, reps = answer.memory_classes(memories)
    assert reps[-1] is None
    assert [sum(1 for m in thresholds if m <= rep * 1e9) for rep in reps[:-1]] == list(range(len(thresholds) + 1))


@given(st.floats(min_value=-1e7, max_value=1e7, allow_nan=False), st.integers(min_value=0, max_value=5))
def test_sort_key_reads_what_fmt_prints(value, digits):
    cell = fmt(value, digits)
    assert sort_key(cell) == float(f"{value:.{digits}f}")
    assert sort_key(cell + " †3") == sort_key(cell + " (cpu) †1,6") == sort_key(cell)
    assert single(cell + " (cpu) †2")


@given(st.floats(min_value=1e-9, max_value=10, allow_nan=False))
def test_sort_key_reads_kld_cells_and_keeps_their_order(value):
    assert sort_key(kld(value)) == pytest.approx(value, rel=1e-2)
    assert sort_key(kld(value)) <= sort_key(kld(value * 1.5))


@given(st.floats(min_value=0, max_value=1e4, allow_nan=False), st.floats(min_value=0, max_value=1e4, allow_nan=False))
def test_a_range_sorts_by_its_start_and_is_no_single_figure(lo, hi):
    cell = f"{lo:.1f}–{hi:.1f}"
    assert sort_key(cell) == float(f"{lo:.1f}") and not single(cell)


@pytest.mark.parametrize("cell", ["–", "", "fp32", "w8 g64 sym", "none (transformers)", "nan"])
def test_missing_and_text_cells_have_no_key(cell):
    assert sort_key(cell) is None


def test_best_is_marked_only_among_own_figures_and_only_with_a_direction():
    assert best_rows("KLD", ["0.00262", "9.39e-04", "–", "0.05"]) == {1}
    assert best_rows("decode tok/s", ["19.7 †1", "17.0", "24.3"]) == {2}
    assert best_rows("Δppl %", ["0.15", "-0.2"]) == set()  # no direction stated for a signed change
    assert best_rows("quality %", ["99.9–100.0", "70.4–99.6"]) == set()  # ranges are not one figure
    assert marks(["1,282 †1", "1.00–1.43× †1,6", "x"]) == [1, 6]


def test_the_page_holds_every_table_and_plot_and_loads_nothing(demo):
    page = html(demo)
    assert page == html(demo)  # the same records give the same bytes
    for ref in ('src="http', "src='http", 'href="http', "href='http", "url(http", "url(//", "@import"):
        assert ref not in page
    assert page.count("<table ") == len(sections(demo))
    assert page.count('<svg class="chart"') == len(charts.render_all(demo)) == 4
    payload = re.search(r'<script type="application/json" id="answers">(.*?)</script>', page).group(1)
    assert json.loads(payload) == json.loads(json.dumps(answer.answers(demo)))


def test_a_page_without_prices_says_there_is_nothing_to_rank():
    records = select(read_results(REPO / "results" / "autoround-smollm2.jsonl"))
    assert "has nothing to rank" in html(records)


def test_the_notebooks_tables_are_the_pages_with_every_note_shown_and_nothing_to_click(demo):
    from quantlab.report.page.render import tables_section

    page, static = tables_section(demo), tables_section(demo, interactive=False)
    cells = re.compile(r"<td[^>]*>.*?</td>")
    assert [c for c in cells.findall(static) if 'class="ctl"' not in c] == [
        c for c in cells.findall(page) if 'class="ctl"' not in c
    ]
    assert static.count('<tr class="notes">') == page.count('<tr class="notes" hidden>') > 0
    assert "<button" not in static and "<input" not in static and " hidden" not in static


def test_the_notebooks_style_reaches_its_own_outputs_only():
    from quantlab.report.page import notebook

    selectors = [s.strip() for rule in notebook.style().split("\n") for s in rule.split(" {", 1)[0].split(",")]
    assert selectors and all(s == ".quantlab-page" or s.startswith(".quantlab-page ") for s in selectors)
    assert "@media" not in notebook.style()


def test_the_notebooks_answer_is_explains_text_line_for_line(demo):
    from quantlab.report.page.notebook import answer_markdown

    text = explain(recommend(demo, rig="cpu", min_quality=97.0), rig="cpu", min_quality=97.0, max_memory_gb=None, at=1)
    shown = re.sub(r"\\(.)", r"\1", answer_markdown(text))
    assert shown.startswith("**Recommended on cpu: ")
    assert sorted(line.strip("*- ") for line in shown.split("\n") if line) == sorted(text.split("\n"))
