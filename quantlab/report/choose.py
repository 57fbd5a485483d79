"""The "which format to choose" table: the guide's summary, derived from the measured rows.

Derived rather than written, so it can say that a method wins nothing here and which row beats it; and only
comparable rows compete (`selection.comparable`: one baseline, rig, host and token stream), because a ranking
across references or machines means nothing.
"""

from __future__ import annotations

import pandas as pd

from quantlab.report.plots import pareto
from quantlab.report.selection import comparable, host, own_speed, quality_pct, scheme, speed_at
from quantlab.report.tables import cell_key, mark_numbers, with_hosts
from quantlab.results import Result

REFERENCE = "the reference (100 % by definition)"


def _range(values: list[float], digits: int, suffix: str = "") -> str:
    if not values:
        return "–"
    low, high = min(values), max(values)
    if f"{low:,.{digits}f}" == f"{high:,.{digits}f}":
        return f"{low:,.{digits}f}{suffix}"
    return f"{low:,.{digits}f}–{high:,.{digits}f}{suffix}"


def _cell(r: Result) -> tuple[str, str | None]:
    """One row's identity here: the file, and the KV-cache type it was measured with (one file measured with
    three caches is three rows, each with its own memory and speed)."""
    return r.artifact.digest, r.runtime.kv_cache_dtype or (r.load.options.kv_cache_dtype if r.load else None)


def _wins(group: list[Result], served: list[Result]) -> dict[tuple, list[str]]:
    """What each cell is measurably best at among its comparable cells; only the format's own speed competes."""
    wins: dict[tuple, list[str]] = {}

    def award(r: Result, what: str) -> None:
        wins.setdefault(_cell(r), []).append(what)

    baseline = group[0].quality.vs_baseline.baseline_digest
    others = [r for r in group if r.artifact.digest != baseline]
    if others:
        award(max(others, key=quality_pct), "highest quality")
    smallest = min(r.artifact.disk_bytes for r in group)
    tied = [r for r in group if r.artifact.disk_bytes == smallest]
    for r in tied:  # equal sizes (one file under several caches, or two types of one size) all say so
        award(r, "smallest file" + (f" (tied with {len(tied) - 1} other{'s' * (len(tied) > 2)})" if tied[1:] else ""))
    measured = [r for r in group if r.memory and own_speed(r)]  # a † cell's memory is its kernel path's
    if measured:
        award(min(measured, key=lambda r: r.memory.peak_bytes), "least memory")
    own = [r for r in group if own_speed(r) and r.speed]
    at_one = [r for r in own if speed_at(r, 1)]
    if at_one:
        award(max(at_one, key=lambda r: speed_at(r, 1).decode_tok_s.median), "fastest batch-1 decode, lowest $/1M")
        largest = max(p.batch_size for r in own for p in r.speed)
        at_largest = [r for r in own if speed_at(r, largest)]
        if largest > 1 and at_largest:
            award(
                max(at_largest, key=lambda r: speed_at(r, largest).decode_tok_s.median),
                f"fastest decode at batch {largest}",
            )
    if served:
        top = max(lv.concurrency for r in served for lv in r.load.levels)
        at_top = [r for r in served if any(lv.concurrency == top for lv in r.load.levels)]
        best = max(at_top, key=lambda r: next(lv.total_tok_s for lv in r.load.levels if lv.concurrency == top))
        award(best, f"most served tok/s at {top} concurrent requests ({best.load.engine})")
    frontier = set(_size_quality_frontier(group))
    for r in others:
        if _cell(r) not in wins and (r.artifact.disk_bytes, -quality_pct(r)) in frontier:
            award(r, "best quality at its size (on the size/quality frontier)")
    return wins


def _size_quality_frontier(group: list[Result]) -> list[tuple[int, float]]:
    return pareto([(r.artifact.disk_bytes, -quality_pct(r)) for r in group])


def _served(results: list[Result], group: list[Result]) -> list[Result]:
    """The served runs that may compete with the group: same rig and host, the same rows (file and cache), the
    format's own kernel."""
    cells = {_cell(g) for g in group}  # a sweep of another cache (or none asked) is another row's
    return [
        r
        for r in results
        if r.load is not None
        and r.load.levels
        and r.rig.name == group[0].rig.name
        and host(r) == host(group[0])
        and own_speed(r)
        and _cell(r) in cells
    ]


def _dominated(cells: list[Result], group: list[Result]) -> str:
    """Why a method wins nothing: the cell that beats its best cell on size and quality (and speed, if known)."""
    best = max(cells, key=quality_pct)
    rivals = [
        r
        for r in group
        if r.artifact.digest != best.artifact.digest
        and r.artifact.disk_bytes <= best.artifact.disk_bytes
        and quality_pct(r) >= quality_pct(best)
    ]
    if not rivals:
        return "nothing singled out here"
    rival = max(rivals, key=quality_pct)
    faster = (
        speed_at(rival, 1)
        and speed_at(best, 1)
        and own_speed(rival)
        and speed_at(rival, 1).decode_tok_s.median >= speed_at(best, 1).decode_tok_s.median
    )
    return (
        f"nothing here: {rival.artifact.display_label(backend=True)} is smaller with higher quality"
        + (" and decodes faster at batch 1" if faster else "")
        + f" than {best.artifact.label}"
    )


def _best_for(cells: list[Result], group: list[Result], base: Result | None, wins: dict[tuple, list[str]]) -> str:
    best_for = [
        f"{scheme(r)}: " + ", ".join(([REFERENCE] if r is base else []) + wins.get(_cell(r), []))
        for r in cells
        if r is base or _cell(r) in wins
    ]
    return "; ".join(best_for or [_dominated(cells, group)])


def _row(method: str, cells: list[Result], base: Result | None, mark: str, best_for: str) -> dict:
    """One method's ranges against the baseline; the † mark follows every speed and memory figure it taints."""
    base_speed = speed_at(base, 1).decode_tok_s.median if base and speed_at(base, 1) else None
    base_memory = base.memory.peak_bytes if base and base.memory else None
    speeds = [speed_at(r, 1).decode_tok_s.median for r in cells if speed_at(r, 1)]
    memory = [r.memory.peak_bytes / base_memory for r in cells if r.memory] if base_memory else []
    return {
        "method": method,
        "schemes": ", ".join(scheme(r) for r in cells),
        "host": host(cells[0]),
        "quality %": _range([quality_pct(r) for r in cells], 1),
        "decode tok/s, batch 1": (_range(speeds, 1) + mark) if speeds else "–",
        "speed vs baseline": (_range([v / base_speed for v in speeds], 2, "×") + mark)
        if speeds and base_speed
        else "–",
        "memory vs baseline": (_range(memory, 2, "×") + mark) if memory else "–",
        "best for (measured here)": best_for,
    }


def choose_table(results: list[Result]) -> pd.DataFrame:
    """A measured "which format to choose" table: per method, its quality, speed and memory range relative to
    the baseline, and what its cells are best at here — derived from the numbers, so it can say "nothing"."""
    group = comparable(results)
    if len(group) < 2:
        return pd.DataFrame()
    baseline_digest = group[0].quality.vs_baseline.baseline_digest
    base = next((r for r in group if r.artifact.digest == baseline_digest), None)
    wins, marks = _wins(group, _served(results, group)), mark_numbers(results)
    methods: dict[str, list[Result]] = {}
    for r in group:
        methods.setdefault(r.artifact.display_label(backend=True, scheme=False), []).append(r)
    rows = []
    for method, cells in methods.items():
        numbers = sorted({marks[cell_key(r)] for r in cells if not own_speed(r)})
        mark = f" †{','.join(map(str, numbers))}" if numbers else ""
        rows.append(_row(method, cells, base, mark, _best_for(cells, group, base, wins)))
    return with_hosts(rows, results)
