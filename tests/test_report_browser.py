"""The HTML report page in a real browser (Debian's chromium, headless, driven by playwright): it runs without an
error, loads nothing from anywhere, sorts, unfolds footnotes, and its answer is `quantlab recommend`'s.

A browser is a requirement of `make test`, not an option: a page that only parses could still throw on open.
Without chromium this test fails and says how to install it; QUANTLAB_SKIP_BROWSER=1 skips it on purpose.
"""

from __future__ import annotations

import os
import shutil

import pytest

from quantlab.report import html, select
from quantlab.report.recommend import explain, recommend
from quantlab.results import read_results

from .conftest import REPO

DEMO_CPU = REPO / "results" / "demo-cpu.jsonl"
INSTALL = "apt-get install -y chromium (Debian; .ci/run does it as root), or set QUANTLAB_SKIP_BROWSER=1"


def _chromium() -> str:
    if os.environ.get("QUANTLAB_SKIP_BROWSER") == "1":
        pytest.skip("QUANTLAB_SKIP_BROWSER=1: the report page is not opened in a browser")
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(f"no chromium on PATH to open the report page in: {INSTALL}", pytrace=False)
    return path


def _headline(demo, floor: float, mem: float | None, basis: str, at: int) -> str:
    rec = recommend(demo, rig="cpu", min_quality=floor, max_memory_gb=mem, basis=basis, at=at)
    text = explain(rec, rig="cpu", min_quality=floor, max_memory_gb=mem, at=at)
    return next(ln for ln in text.split("\n") if ln.startswith(("Recommended on", "No format on")))


def _column(page, table: str, heading: str) -> list[float]:
    """The sort keys of a column's cells, in the order the rows now stand (missing cells left out)."""
    return page.eval_on_selector(
        f"#{table}",
        """(t, heading) => {
            const col = Array.from(t.tHead.rows[0].cells).findIndex((c) => c.textContent.startsWith(heading));
            return Array.from(t.tBodies).map((b) => b.rows[0].cells[col].dataset.k)
                .filter((k) => k !== undefined).map(Number);
        }""",
        heading,
    )


def test_the_report_page_in_a_browser(tmp_path):
    executable = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e '.[dev]' (never `playwright install`)", pytrace=False)
    demo = select(read_results(DEMO_CPU))
    target = tmp_path / "demo-cpu.html"
    target.write_text(html(demo), encoding="utf-8")
    url = target.as_uri()
    errors, requests = [], []

    def route(r):
        if r.request.url == url or r.request.url.startswith("data:"):
            r.continue_()
        else:
            requests.append(r.request.url)
            r.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.route("**/*", route)
        page.goto(url)

        before = _column(page, "t0", "KLD")
        page.click("#t0 th button.sort:text-is('KLD')")
        after = _column(page, "t0", "KLD")
        assert after == sorted(before) and after != before
        page.click("#t0 th button.sort:text-is('KLD')")
        assert _column(page, "t0", "KLD") == sorted(before, reverse=True)

        winners = set()
        cases = [(0, None, "0"), (99.5, None, "0"), (97.0, 0.8, "0"), (100.05, None, "0"), (0, None, "3")]
        for floor, mem, point in cases:
            page.select_option("#point", point)
            basis, at = ("decode", 1) if point == "0" else ("served", 8)
            page.fill("#memory", "" if mem is None else str(mem))
            page.fill("#floor", str(floor))
            expected = _headline(demo, floor, mem, basis, at)
            shown = page.text_content("#headline")
            if expected.startswith("No format"):  # it quotes the floor: the page's is the equivalent one it names
                assert shown.startswith("No format on rig cpu meets quality ≥ "), shown
            else:
                assert shown == expected, (floor, mem, basis, at)
            winners.add(expected)
        assert len(winners) >= 3

        row = page.locator("#t0 tbody.has-notes tr.row").first
        notes = page.locator("#t0 tbody.has-notes tr.notes").first
        assert notes.is_hidden()
        row.click()
        assert notes.is_visible() and notes.text_content().startswith("†")

        shot = tmp_path / "page.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()

    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and shot.stat().st_size > 10_000
    assert errors == [] and requests == []
