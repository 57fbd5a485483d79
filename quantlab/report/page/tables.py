"""The report's tables as HTML a reader can sort, filter and unfold: the same DataFrames as the Markdown report
(`sections.sections`), cell for cell, with what the browser needs put on them here.

Numbers are parsed once, here, into each cell's `data-k` sort key, so the page's script compares numbers and
never parses a formatted string. Which way is better is stated only for columns where it is unambiguous
(`BETTER`); the best cell of such a column is marked among the cells whose figure is the format's own (no †):
a † figure is its kernel path's, as the "which format to choose" table rules too.
"""

from __future__ import annotations

import re
from html import escape

import pandas as pd

# Which way is better, by column name, for the columns where that is unambiguous.
BETTER: dict[str, str] = {
    "size on disk MB": "lower",
    "peak memory MB": "lower",
    "ppl": "lower",
    "KLD": "lower",
    "$/1M": "lower",
    "$/1M out": "lower",
    "TTFT ms": "lower",
    "TPOT ms": "lower",
    "TTFT ms p50/p99": "lower",
    "TPOT ms p50/p99": "lower",
    "ITL ms p50/p99": "lower",
    "prefill tok/s": "higher",
    "decode tok/s": "higher",
    "total tok/s": "higher",
    "output tok/s": "higher",
    "req/s": "higher",
    "quality %": "higher",
    "top-1 %": "higher",
    "recovery %": "higher",
}

MISSING = {"", "–", "-", "nan", "None"}
_NUMBER = re.compile(r"\s*([-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:[eE][-+]?\d+)?)")
# What may follow a single figure: a rig "(cpu)", a footnote mark "†3" or "†1,6", a "×" ratio.
_SINGLE_TAIL = re.compile(r"^×?(?:\s*\([^()]*\))?(?:\s*†[\d,]+)?\s*$")
_MARKS = re.compile(r"†([\d,]+)")


def sort_key(cell: object) -> float | None:
    """The number a cell leads with ("1,321 †1" → 1321, "12.3–99.7" → 12.3, "9.39e-04" → 0.000939), or None
    for a missing ("–") or text cell."""
    text = str(cell).strip()
    if text in MISSING:
        return None
    m = _NUMBER.match(text)
    digits = m.group(1) if m else ""
    if not any(ch.isdigit() for ch in digits.split("e")[0].split("E")[0]):
        return None
    try:
        return float(digits.replace(",", ""))
    except ValueError:
        return None


def single(cell: object) -> bool:
    """Whether a cell is one figure (not a range or a pair), so it can be the best of its column."""
    text = str(cell).strip()
    m = _NUMBER.match(text)
    return sort_key(text) is not None and m is not None and bool(_SINGLE_TAIL.match(text[m.end() :]))


def marks(row: list[object]) -> list[int]:
    """The footnote numbers a row's cells carry, in order."""
    found = {int(n) for cell in row for group in _MARKS.findall(str(cell)) for n in group.split(",") if n}
    return sorted(found)


def _column_keys(values: list[object]) -> list[float | None] | None:
    """Sort keys for a numeric column (every non-missing cell leads with a number), else None: text sorts."""
    keys = [sort_key(v) for v in values]
    present = [str(v).strip() not in MISSING for v in values]
    numeric = any(present) and all(k is not None for k, p in zip(keys, present, strict=True) if p)
    return keys if numeric else None


def best_rows(column: str, values: list[object]) -> set[int]:
    """The rows holding the column's best own (no †) figure, where the column has a direction and ≥ 2 figures."""
    better = BETTER.get(column)
    own = [(i, sort_key(v)) for i, v in enumerate(values) if single(v) and "†" not in str(v)]
    if better is None or len(own) < 2 or any(not single(v) for v in values if str(v).strip() not in MISSING):
        return set()
    best = (min if better == "lower" else max)(k for _, k in own)
    return {i for i, k in own if k == best}


def _cell(value: object, key: float | None, best: bool, numeric: bool) -> str:
    """A cell; text aligns left and long text (a claim, a tensor census) may wrap, figures align right on one
    line."""
    text = str(value)
    kind = "best" if best else "" if numeric else "t wrap" if len(text) > 40 else "t"
    attrs = ("" if key is None else f' data-k="{key!r}"') + (f' class="{kind}"' if kind else "")
    return f"<td{attrs}>{escape(text)}</td>"


def _head(table: pd.DataFrame, numeric: list[bool], interactive: bool) -> str:
    def name(col: object) -> str:
        text = escape(str(col))
        return f'<button type="button" class="sort">{text}</button>' if interactive else text

    cells = "".join(
        f'<th scope="col" data-num="{int(num)}"{_better_attr(col)}>{name(col)}</th>'
        for col, num in zip(table.columns, numeric, strict=True)
    )
    return f'<thead><tr><th scope="col" class="ctl"><span class="sr">notes</span></th>{cells}</tr></thead>'


def _better_attr(column: str) -> str:
    better = BETTER.get(column)
    return "" if better is None else f' data-better="{better}" title="{better} is better"'


def render_table(table: pd.DataFrame, notes: dict[int, str], table_id: str, *, interactive: bool = True) -> str:
    """One table: a filter box, a horizontally scrolling box, a ▸ button on each row with footnote marks that
    unfolds those notes in a row beneath it. `interactive=False` is the same table for a host that may run no
    script (a notebook's output): no filter box or sort buttons, and every row's notes shown beneath it, since
    nothing could unfold them."""
    columns = [table[c].tolist() for c in table.columns]
    keys = [_column_keys(values) for values in columns]
    best = [best_rows(str(c), values) for c, values in zip(table.columns, columns, strict=True)]
    rows = []
    for i, row in enumerate(table.itertuples(index=False, name=None)):
        cells = "".join(
            _cell(v, None if k is None else k[i], i in b, k is not None)
            for v, k, b in zip(row, keys, best, strict=True)
        )
        numbers = [n for n in marks(list(row)) if n in notes]
        if not numbers:
            rows.append(f'<tbody><tr><td class="ctl"></td>{cells}</tr></tbody>')
            continue
        label = "†" + ",".join(map(str, numbers))
        button = f'<button type="button" class="fn" aria-expanded="false" title="show notes {label}">▸ {label}</button>'
        control, hidden = (button, " hidden") if interactive else (label, "")
        items = "".join(f"<li>{escape(notes[n])}</li>" for n in numbers)
        rows.append(
            f'<tbody class="has-notes"><tr class="row"><td class="ctl">{control}</td>{cells}</tr>'
            f'<tr class="notes"{hidden}><td colspan="{len(table.columns) + 1}"><ul>{items}</ul></td></tr></tbody>'
        )
    label = (
        f'<label class="filter">Filter <input type="search" data-table="{table_id}" '
        'placeholder="text in a row"></label>'
        if interactive
        else ""
    )
    head = _head(table, [k is not None for k in keys], interactive)
    return f'{label}<div class="scroll"><table id="{table_id}">{head}{"".join(rows)}</table></div>'
