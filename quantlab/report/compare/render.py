"""A comparison as a reader gets it: Markdown, or the same content as one self-contained HTML page.

Both formats are built from the same tables and sentences, so they cannot say different things. Cells are text:
a value carries its spread and a ratio its mark in the cell itself, so a copied row keeps them.
"""

from __future__ import annotations

import math
from html import escape

import pandas as pd

from quantlab.report.compare.build import Comparison, Line, Row
from quantlab.report.compare.spread import RULES, SPREAD_NOTE, Measure, Verdict
from quantlab.report.render import page
from quantlab.report.selection import host

MARK = "◆"
TITLE = "quantlab compare"


def number(x: float) -> str:
    """Four significant digits, whatever the scale (KLD near 1e-5 and sizes near 1e4 in one column)."""
    if not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    if abs(x) >= 1e4:
        return f"{x:,.0f}"
    return f"{x:.2e}" if abs(x) < 1e-3 else f"{x:.4g}"


def value_cell(m: Measure | None) -> str:
    if m is None:
        return "–"
    if m.rule == "exact":
        return f"{m.value:,.0f}"  # every digit: the rule marks a difference of one byte
    text = number(m.value)
    if not m.has_spread():
        return text
    if m.rule == "stderr":
        return f"{text} ± {number(m.se)}"
    if m.rule == "repeats":
        return f"{text} [{number(m.low)}–{number(m.high)}]"
    return f"{text} (p90 {number(m.high)})"


def ratio_cell(ratio: float | None, v: Verdict | None, rule: str) -> str:
    if v is None:
        return "–"  # the figure is absent from one of the two records
    text = "–" if ratio is None else f"{ratio:.3f}"
    if v == "beyond":
        return f"{text} {MARK}"
    return f"{text} (no spread recorded)" if v == "no spread" and rule != "none" else text


def runs_table(c: Comparison) -> pd.DataFrame:
    rows = []
    for run in c.runs:
        ids = sorted({r.run_id for r in run.records})
        times = sorted(r.timestamp for r in run.records)
        rows.append(
            {
                "run": run.label,
                "file": run.path,
                "records": len(run.records),
                "compared": len(run.rows),
                "run ids": ids[0] if len(ids) == 1 else f"{len(ids)}: {ids[0]} … {ids[-1]}",
                "made (UTC)": f"{times[0]:%Y-%m-%d %H:%M} – {times[-1]:%Y-%m-%d %H:%M}",
                "hosts": ", ".join(sorted({host(r) for r in run.records})),
                "quantlab": ", ".join(sorted({r.quantlab_version for r in run.records})),
            }
        )
    return pd.DataFrame(rows)


def metrics_table(c: Comparison, row: Row) -> pd.DataFrame:
    a = c.runs[0].label
    table = []
    for line in row.lines:
        cells = {"metric": line.metric, a: value_cell(line.values[0])}
        for k, run in enumerate(c.runs[1:]):
            cells[run.label] = value_cell(line.values[k + 1])
            cells[f"{run.label}/{a}"] = ratio_cell(line.ratios[k], line.verdicts[k], line.rule)
        table.append(cells | {"spread": SPREAD_NOTE[line.rule]})
    return pd.DataFrame(table)


def unpaired_table(c: Comparison) -> pd.DataFrame:
    return pd.DataFrame([{"run": u.run, "artifact · configuration": u.title, "why": u.why} for u in c.unpaired])


def summary(c: Comparison) -> list[str]:
    a = c.runs[0].label
    marked = c.marked()
    said = [
        f"{len(c.rows)} artifact configurations paired with {a}'s, {len(c.unpaired)} unpaired. {MARK} marks a "
        f"figure that differs from {a}'s beyond both runs' spread; {len(marked)} marked."
    ]
    said += [f"{row.title} — {line.metric}: {c.runs[k + 1].label}/{a} {_ratio(line, k)}" for row, line, k in marked]
    return said


def _ratio(line: Line, k: int) -> str:
    return "–" if line.ratios[k] is None else f"{line.ratios[k]:.3f}"


def row_notes(c: Comparison, row: Row) -> list[str]:
    said = ["; ".join(row.pairing) + "."]
    if row.differences:
        said.append(
            "Measured differently (a reason for a difference other than the artifact): "
            + "; ".join(row.differences)
            + "."
        )
    else:
        said.append("Measured the same way: host, rig, token stream, settings, baseline and versions all equal.")
    return said


def rules() -> list[str]:
    why = "A figure one record lacks shows as –. Why each rule: quantlab/report/compare/spread.py."
    return [f"{name}: {text}." for name, text in RULES.items()] + [why]


def markdown(c: Comparison, *, title: str = TITLE) -> str:
    md = {"index": False, "disable_numparse": True}  # tabulate would turn "1.000" into 1
    lines = [f"# {title}", "", runs_table(c).to_markdown(**md), ""]
    lines += [f"- {s}" if i else s for i, s in enumerate(summary(c))] + [""]
    for row in c.rows:
        lines += [f"## {row.title}", ""] + [f"{n}  " for n in row_notes(c, row)]
        lines += ["", metrics_table(c, row).to_markdown(**md), ""]
    if c.unpaired:
        lines += ["## Unpaired", "", unpaired_table(c).to_markdown(**md), ""]
    lines += ["## When a difference is marked", ""] + [f"- {r}" for r in rules()] + [""]
    return "\n".join(lines)


def html(c: Comparison, *, title: str = TITLE) -> str:
    said = summary(c)
    body = [runs_table(c).to_html(index=False), f"<p>{escape(said[0])}</p>"]
    body += [f"<ul>{''.join(f'<li>{escape(s)}</li>' for s in said[1:])}</ul>"] if said[1:] else []
    for row in c.rows:
        body += [f"<h2>{escape(row.title)}</h2>"] + [f"<p>{escape(n)}</p>" for n in row_notes(c, row)]
        body.append(metrics_table(c, row).to_html(index=False))
    if c.unpaired:
        body += ["<h2>Unpaired</h2>", unpaired_table(c).to_html(index=False)]
    body += ["<h2>When a difference is marked</h2>", f"<ul>{''.join(f'<li>{escape(r)}</li>' for r in rules())}</ul>"]
    return page(title, "".join(body))


FORMATS = {"md": markdown, "html": html}
