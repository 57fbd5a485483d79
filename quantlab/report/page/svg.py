"""Scatter and line charts as inline SVG, drawn here: the page must open offline as one file, so no plotting
library is loaded by the browser, and matplotlib's SVG carries no hover names.

Every mark carries its numbers twice: an SVG <title> (what any viewer shows on hover) and a `data-tip` the
page's script shows as a tooltip on pointer and keyboard focus. Output is a pure function of the chart, so the
same records give the same bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

WIDTH, HEIGHT = 640, 400
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 34, 46
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


@dataclass(frozen=True)
class Mark:
    x: float
    y: float
    label: str  # written beside the mark; "" for none
    tip: str  # the artifact and its numbers
    hollow: bool = False  # speed not the format's own, as the PNG plots draw it
    series: int = 0


@dataclass(frozen=True)
class Line:
    points: list[tuple[float, float]]
    name: str
    series: int = 0
    dashed: bool = False


@dataclass(frozen=True)
class Chart:
    title: str
    xlabel: str
    ylabel: str
    marks: list[Mark]
    lines: list[Line] = field(default_factory=list)
    xlog: bool = False
    ylog: bool = False


class _Axis:
    """Data to pixels along one axis, linear or log10, padded so no mark sits on the frame."""

    def __init__(self, values: list[float], log: bool, lo_px: float, hi_px: float) -> None:
        self.log = log
        vs = [math.log10(v) for v in values if v > 0] if log else values
        lo, hi = (min(vs), max(vs)) if vs else (0.0, 1.0)
        pad = (hi - lo) * 0.06 or (0.3 if log else abs(lo) * 0.1 or 1.0)
        self.lo, self.hi, self.lo_px, self.hi_px = lo - pad, hi + pad, lo_px, hi_px

    def px(self, v: float) -> float:
        t = math.log10(v) if self.log else v
        return self.lo_px + (t - self.lo) / (self.hi - self.lo) * (self.hi_px - self.lo_px)

    def ticks(self) -> list[float]:
        if self.log:
            decades = range(math.ceil(self.lo), math.floor(self.hi) + 1)
            ticks = [10.0**d for d in decades]
            if len(ticks) < 3:  # a narrow span: 1-2-5 steps within each decade
                steps = (10.0**d * m for d in range(math.floor(self.lo), math.ceil(self.hi)) for m in (1, 2, 5))
                ticks = [t for t in steps if self.lo <= math.log10(t) <= self.hi]
            return ticks
        raw = (self.hi - self.lo) / 5
        step = min((m * 10.0 ** math.floor(math.log10(raw)) for m in (1, 2, 5, 10)), key=lambda s: abs(s - raw))
        return [i * step for i in range(math.ceil(self.lo / step), math.floor(self.hi / step) + 1)]


def number(v: float) -> str:
    """A tick label: short, and exponent form only where decimals would be all zeros."""
    if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e5):
        return f"{v:.0e}"
    return f"{v:,.6g}"


def _grid(chart: Chart, xa: _Axis, ya: _Axis) -> list[str]:
    out = []
    for t in xa.ticks():
        x = xa.px(t)
        out.append(f'<line class="grid" x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{HEIGHT - BOTTOM}"/>')
        out.append(f'<text class="tick" x="{x:.1f}" y="{HEIGHT - BOTTOM + 14}" text-anchor="middle">{number(t)}</text>')
    for t in ya.ticks():
        y = ya.px(t)
        out.append(f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}"/>')
        out.append(f'<text class="tick" x="{LEFT - 4}" y="{y + 3:.1f}" text-anchor="end">{number(t)}</text>')
    frame = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    out.append(f'<rect class="frame" x="{LEFT}" y="{TOP}" width="{frame[0]}" height="{frame[1]}"/>')
    out.append(f'<text class="title" x="{WIDTH / 2}" y="18" text-anchor="middle">{escape(chart.title)}</text>')
    out.append(f'<text class="axis" x="{LEFT + frame[0] / 2}" y="{HEIGHT - 8}" text-anchor="middle">')
    out.append(f"{escape(chart.xlabel)}</text>")
    mid = TOP + frame[1] / 2
    out.append(f'<text class="axis" transform="translate(14 {mid}) rotate(-90)" text-anchor="middle">')
    out.append(f"{escape(chart.ylabel)}</text>")
    return out


def _label_spots(marks: list[tuple[float, float, str]]) -> list[tuple[float, float]]:
    """Where each label goes: the first spot beside its mark that overlaps no earlier label (formats of one
    size sit on top of each other). Deterministic, like the PNG plots' placement."""
    placed: list[tuple[float, float, float, float]] = []
    spots = []
    for x, y, text in marks:
        width = 5.6 * len(text)
        for dx, dy in ((6, -5), (6, 11), (6, -17), (6, 23), (-width - 6, -5), (-width - 6, 11)):
            box = (x + dx, y + dy - 9, x + dx + width, y + dy + 2)
            if box[0] < 0 or box[2] > WIDTH:  # a label cut by the edge is as unreadable as a stacked one
                continue
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                break
        placed.append(box)
        spots.append((x + dx, y + dy))
    return spots


def render(chart: Chart) -> str:
    """The chart as one <svg> element, scaled by its viewBox to the width of its box."""
    xs = [m.x for m in chart.marks] + [p[0] for ln in chart.lines for p in ln.points]
    ys = [m.y for m in chart.marks] + [p[1] for ln in chart.lines for p in ln.points]
    xa = _Axis(xs, chart.xlog, LEFT, WIDTH - RIGHT)
    ya = _Axis(ys, chart.ylog, HEIGHT - BOTTOM, TOP)
    out = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(chart.title)}">']
    out += _grid(chart, xa, ya)
    for ln in chart.lines:
        path = " ".join(f"{xa.px(x):.1f},{ya.px(y):.1f}" for x, y in ln.points)
        dash = ' stroke-dasharray="5 4"' if ln.dashed else ""
        color = COLORS[ln.series % len(COLORS)]
        out.append(f'<polyline class="series" points="{path}" stroke="{color}"{dash}><title>{escape(ln.name)}</title>')
        out.append("</polyline>")
    pixels = [(xa.px(m.x), ya.px(m.y), m) for m in chart.marks]
    for x, y, m in pixels:
        color = COLORS[m.series % len(COLORS)]
        fill = "none" if m.hollow else color
        out.append(f'<g class="pt" tabindex="0" data-tip="{escape(m.tip)}"><title>{escape(m.tip)}</title>')
        out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{fill}" stroke="{color}"/></g>')
    labelled = [(x, y, m.label) for x, y, m in pixels if m.label]
    for (x, y), (_, _, text) in zip(_label_spots(labelled), labelled, strict=True):
        out.append(f'<text class="lbl" x="{x:.1f}" y="{y:.1f}">{escape(text)}</text>')
    out.append("</svg>")
    return "".join(out)


def legend(entries: list[tuple[str, int, bool]]) -> str:
    """A legend under a chart as HTML (it wraps on a phone, where text inside the SVG would shrink away)."""
    items = "".join(
        f'<li><span class="key{" dashed" if dashed else ""}" style="border-color:{COLORS[s % len(COLORS)]}"></span>'
        f"{escape(name)}</li>"
        for name, s, dashed in entries
    )
    return f'<ul class="legend">{items}</ul>'
