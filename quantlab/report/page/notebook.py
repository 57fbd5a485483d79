"""The page's pieces as a Jupyter notebook shows them (`notebooks/report.ipynb`).

A notebook is a poor host for the page as it stands: an output's scripts run only once its cell has run in that
browser (a notebook executed elsewhere opens untrusted), and an output's <style> reaches the notebook's own UI.
So the pieces come from the page's own modules, unchanged in content, with two adaptations made here: the
page's stylesheet scoped to a wrapper class, so it styles these outputs and nothing else, and the tables in their
static form (no sort or filter, every row's footnotes shown). The interactive page itself goes in an iframe,
which is a document of its own and runs its script there.
"""

from __future__ import annotations

import re
from html import escape

from quantlab.report.page import charts as page_charts
from quantlab.report.page.render import asset, html_page, notes_section, tables_section
from quantlab.results import Result

SCOPE = "quantlab-page"
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>$|~#])")


def _top_level_rules(css: str) -> list[tuple[str, str]]:
    """(selectors, body on one line) of each top-level rule; at-rules (`@media`) are dropped with everything
    inside them, since their rules are for the page's own narrow-screen layout."""
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    rules, depth, start, selector = [], 0, 0, ""
    for i, ch in enumerate(css):
        if ch == "{":
            if depth == 0:
                selector, start = css[:i].rsplit("}", 1)[-1].strip(), i + 1
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0 and not selector.startswith("@"):
                rules.append((selector, " ".join(css[start:i].split())))
    return rules


def style() -> str:
    """The page's stylesheet with every selector put under `.quantlab-page` (`:root`'s variables on the wrapper
    itself), so that outputs styled by it look like the page and the notebook around them does not change."""
    out = []
    for selectors, body in _top_level_rules(asset("page.css")):
        scoped = [f".{SCOPE}" if s == ":root" else f".{SCOPE} {s}" for s in (s.strip() for s in selectors.split(","))]
        out.append(f"{', '.join(scoped)} {{ {body} }}")
    return "\n".join(out)


def wrap(body: str) -> str:
    """HTML for one output: the scoped style travels with each, as outputs are cleared and re-run one by one."""
    return f'<div class="{SCOPE}"><style>{style()}</style>{body}</div>'


def charts(results: list[Result]) -> dict[str, str]:
    """The page's charts (inline SVG with their legends; a point's numbers show on hover through its SVG
    <title>), each as one output's HTML, by name, in the page's order."""
    return {name: wrap(f"<figure>{svg}</figure>") for name, svg in page_charts.render_all(results).items()}


def tables(results: list[Result]) -> str:
    """The page's tables, in the static form a notebook can show without running a script."""
    return wrap(tables_section(results, interactive=False))


def how_made(results: list[Result]) -> str:
    """The page's "How these numbers were made", unfolded: in a notebook it is a section to read, not a fold."""
    return wrap(notes_section(results, folded=False))


def iframe(results: list[Result], title: str, height_px: int = 900) -> str:
    """The whole interactive page in an iframe (`srcdoc`, so nothing is written or served): its script runs in
    the frame's own document. `sandbox="allow-scripts"`: the page needs its script and nothing else."""
    frame = (
        f'<iframe srcdoc="{escape(html_page(results, title), quote=True)}" sandbox="allow-scripts" '
        f'title="{escape(title, quote=True)}" style="width:100%;height:{height_px}px;border:1px solid #d0d7de">'
        "</iframe>"
    )
    return f"<div>{frame}</div>"  # IPython's HTML warns on a bare <iframe>, meaning one loaded by URL


def _md(text: str) -> str:
    """Text shown literally in Markdown: a "$" pair would otherwise be typeset as math, "*" or "_" as emphasis."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def answer_markdown(text: str) -> str:
    """`explain()`'s text laid out as the page lays it out: the verdict first, in bold, then the reasons, then
    what was excluded and why. Every line of the text appears once, word for word."""
    lines = text.split("\n")
    head = next((line for line in lines if line.startswith(("Recommended on", "No format on"))), None)
    reasons = [line for line in lines if line != head and not line.startswith("Excluded: ")]
    excluded = [line for line in lines if line.startswith("Excluded: ")]
    out = [] if head is None else [f"**{_md(head)}**", ""]
    out += [f"- {_md(line)}" for line in reasons + excluded]
    return "\n".join(out)
