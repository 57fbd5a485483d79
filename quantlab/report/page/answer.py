"""The page's answer: `quantlab recommend` for every setting of its controls, computed here and embedded as JSON.

The page must never give an answer the command would not, so it carries no rule of its own: this module calls
`recommend()` and `explain()` for one representative setting of each class of equivalent settings, and the
page's script only picks the class a control's value falls in.

Two settings are equivalent when they admit the same candidates, and `recommend` admits a candidate when
`quality_pct >= min_quality` (it excludes `<`) and `memory_bytes <= max_memory_gb * 1e9` (it excludes `>`). So,
with the candidates' distinct qualities q and memories m sorted ascending:
- a floor f falls in class i = #{q < f}; its representative is the smallest quality not below it (0 when
  nothing is below 0), or, past the best quality, a round number above it;
- a limit x (GB) falls in class j = #{m <= x × 1e9}, computed with the same float arithmetic in the page; its
  representative is m_j / 1e9 (0 for j = 0), plus a last class for "no limit" (None).
A representative gives the same winner, runner-up and candidates as every value of its class; only the floor or
limit the text quotes differs, and the page says which representative it shows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from quantlab.report.recommend import explain, recommend
from quantlab.results import Result


@dataclass(frozen=True)
class Point:
    """An operating point a price is read at: `--basis` and `--at`."""

    basis: str
    at: int

    def label(self) -> str:
        return f"decode at batch {self.at}" if self.basis == "decode" else f"served at concurrency {self.at}"


def operating_points(results: list[Result], rig: str) -> list[Point]:
    """Every (basis, at) some record on the rig holds a price for: decode first, then served, by size."""
    held = {(c.basis, c.batch_size) for r in results if r.rig.name == rig for c in r.cost}
    return [Point(b, at) for b, at in sorted(held, key=lambda p: (p[0] != "decode", p[0], p[1]))]


def floor_classes(qualities: list[float]) -> tuple[list[float], list[float]]:
    """(thresholds, representatives): a floor f is in class #{t in thresholds: t < f}."""
    qs = sorted(set(qualities))
    if not qs:
        return [], [0.0]
    reps = [0.0 if qs[0] >= 0 else qs[0], *qs[1:]]
    above = math.floor(qs[-1] * 10) / 10 + 0.1
    while above <= qs[-1]:  # float rounding: the representative must exclude the best quality too
        above = math.nextafter(above, math.inf)
    return qs, [*reps, above]


def memory_classes(memories: list[int]) -> tuple[list[int], list[float | None]]:
    """(thresholds in bytes, representatives in GB, the last None): a limit x is in class
    #{m in thresholds: m <= x * 1e9}, and an empty limit in the last class."""
    ms = sorted(set(memories))
    reps: list[float | None] = [0.0]
    for m in ms:
        gb = m / 1e9
        while gb * 1e9 < m:  # recommend compares m > gb * 1e9: the representative must admit m itself
            gb = math.nextafter(gb, math.inf)
        reps.append(gb)
    return ms, [*reps, None]


class _Texts:
    """Explanations as lists of line ids into one shared line table: most lines recur across settings."""

    def __init__(self) -> None:
        self.lines: dict[str, int] = {}
        self.texts: dict[tuple[int, ...], int] = {}

    def add(self, text: str) -> int:
        ids = tuple(self.lines.setdefault(line, len(self.lines)) for line in text.split("\n"))
        return self.texts.setdefault(ids, len(self.texts))


def _point_entry(results: list[Result], rig: str, point: Point, texts: _Texts) -> dict:
    """One operating point's classes and, for each (floor class, memory class), the id of its explanation."""
    everyone = recommend(results, rig=rig, basis=point.basis, at=point.at).considered
    qs, floors = floor_classes([c.quality_pct for c in everyone])
    ms, mems = memory_classes([c.memory_bytes for c in everyone])
    grid = []
    for floor in floors:
        row = []
        for mem in mems:
            rec = recommend(results, rig=rig, min_quality=floor, max_memory_gb=mem, basis=point.basis, at=point.at)
            row.append(texts.add(explain(rec, rig=rig, min_quality=floor, max_memory_gb=mem, at=point.at)))
        grid.append(row)
    return {
        "basis": point.basis,
        "at": point.at,
        "label": point.label(),
        "q": qs,
        "floors": floors,
        "m": ms,
        "mems": mems,
        "grid": grid,
    }


def answers(results: list[Result]) -> dict:
    """What the page's controls choose from: every rig with a price, each of its operating points, and the
    explanation of every class of settings, deduplicated. Deterministic: sorted rigs, points and thresholds."""
    texts = _Texts()
    rigs = sorted({r.rig.name for r in results if r.cost})
    data = {rig: [_point_entry(results, rig, p, texts) for p in operating_points(results, rig)] for rig in rigs}
    return {"rigs": data, "lines": list(texts.lines), "texts": [list(ids) for ids in texts.texts]}


def lookup(
    data: dict, rig: str, basis: str, at: int, floor: float, mem: float | None
) -> tuple[str, float, float | None]:
    """What the page shows for these control values: (explanation, floor and limit it was computed at). The
    page's script does exactly this; the tests hold it to a direct `recommend()`."""
    entry = next(e for e in data["rigs"][rig] if e["basis"] == basis and e["at"] == at)
    i = sum(1 for q in entry["q"] if q < floor)
    j = len(entry["mems"]) - 1 if mem is None else sum(1 for m in entry["m"] if m <= mem * 1e9)
    ids = data["texts"][entry["grid"][i][j]]
    return "\n".join(data["lines"][k] for k in ids), entry["floors"][i], entry["mems"][j]
