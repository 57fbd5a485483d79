"""The report page a person reads: the answer first (`quantlab recommend` under the reader's constraints), then
the plots, then the tables, then how the numbers were made, folded.

One self-contained file: its style and script are this package's own files, inlined, and nothing is loaded by
URL, so the page opens offline and travels as one file. Its content is a pure function of the records (no time,
no random ids), so the same records give the same bytes and a committed page can be checked.
"""

from __future__ import annotations

import json
import re
from html import escape
from importlib import resources

from quantlab.report.notes import footnotes
from quantlab.report.page import answer, charts
from quantlab.report.page.tables import BETTER, render_table
from quantlab.report.sections import sections
from quantlab.results import Result


def asset(name: str) -> str:
    return resources.files("quantlab.report.page").joinpath(name).read_text(encoding="utf-8")


def _json(data: object) -> str:
    """JSON safe inside <script>: "</" and "<!--" can end or confuse the element, so every "<" is escaped."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")


def _answer_section(results: list[Result]) -> str:
    data = answer.answers(results)
    if not data["rigs"]:
        return (
            '<section id="answer"><h2>Which format to use</h2><p>These records hold no price ($/1M), so '
            "<code>quantlab recommend</code> has nothing to rank.</p></section>"
        )
    controls = (
        '<form id="controls" onsubmit="return false">'
        '<label>Rig <select id="rig"></select></label>'
        '<label>Priced at <select id="point"></select></label>'
        '<label>Quality floor, % of baseline <span class="pair">'
        '<input id="floor-range" type="range" min="0" max="100" step="0.1" value="0">'
        '<input id="floor" type="number" min="0" max="200" step="any" value="0" inputmode="decimal"></span></label>'
        '<label>Max memory, GB <input id="memory" type="number" min="0" step="any" placeholder="no limit" '
        'inputmode="decimal"></label></form>'
    )
    return (
        '<section id="answer"><h2>Which format to use</h2>'
        '<p class="lead">The cheapest format per 1M tokens that meets your limits, by the same code as '
        "<code>quantlab recommend</code>, from these records only.</p>"
        f"{controls}"
        '<div id="verdict" aria-live="polite"><p id="headline"></p><ul id="reasons"></ul>'
        '<details id="excluded"><summary>Excluded</summary><ul></ul></details>'
        '<p id="equivalent" class="small"></p></div>'
        f'<script type="application/json" id="answers">{_json(data)}</script></section>'
    )


def _plots_section(results: list[Result]) -> str:
    drawn = charts.render_all(results)
    if not drawn:
        return ""
    figures = "".join(f'<figure id="plot-{name}">{svg}</figure>' for name, svg in drawn.items())
    return (
        '<section id="plots"><h2>Plots</h2><p class="small">Hover or focus a point for its numbers. Hollow: '
        f'measured on a dequantized or emulated kernel path.</p><div class="plots">{figures}</div></section>'
    )


def tables_section(results: list[Result], *, interactive: bool = True) -> str:
    """Every table of the report, in its order. `interactive=False`: the static form a notebook shows (see
    `tables.render_table`), with a legend that promises no sorting."""

    notes = {int(m.group(1)): n for n in footnotes(results) if (m := re.match(r"†(\d+) ", n))}
    out = []
    for i, (heading, table) in enumerate(sections(results)):
        title = heading or "The tradeoff table"
        drawn = render_table(table, notes, f"t{i}", interactive=interactive)
        out.append(f'<section class="table"><h2>{escape(title)}</h2>{drawn}</section>')
    better = ", ".join(f"{escape(c)} {b}" for c, b in BETTER.items())
    how = (
        "Click a heading to sort; ▸ unfolds a row's footnotes." if interactive else "A row's footnotes are beneath it."
    )
    legend = (
        f'<p class="small">{how} <span class="best">Marked</span>: '
        f"the best figure of its column that is the format's own (no †). Better is: {better}.</p>"
    )
    return legend + "".join(out)


def notes_section(results: list[Result], *, folded: bool = True) -> str:
    """The footnotes and library versions under "How these numbers were made"; folded on the page, where the
    answer and tables come first."""
    items = "".join(f"<li>{escape(n)}</li>" for n in footnotes(results))
    versions = sorted({f"{k} {v}" for r in results for k, v in r.libraries.items()})
    items += f"<li>Libraries: {escape(', '.join(versions))}.</li>"
    state = "" if folded else " open"
    return f'<details id="how"{state}><summary>How these numbers were made</summary><ul>{items}</ul></details>'


def html_page(results: list[Result], title: str) -> str:
    """The whole page, as `quantlab report --format html` prints it and `write_report` writes it."""
    body = _answer_section(results) + _plots_section(results) + tables_section(results) + notes_section(results)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{asset('page.css')}</style></head>"
        f'<body><main><h1>{escape(title)}</h1>{body}</main><div id="tip" role="tooltip" hidden></div>'
        f"<script>{asset('page.js')}</script></body></html>\n"
    )
