"""The page's plots: the PNG report's three (same points, same frontier, same hollow marks, chosen by the
helpers in `quantlab.report.plots`) plus TTFT against throughput, as SVG with every point named on hover."""

from __future__ import annotations

from quantlab.report import plots
from quantlab.report.page.svg import Chart, Line, Mark, legend, render
from quantlab.report.selection import quality_pct, subject
from quantlab.report.tables import kld
from quantlab.results import Result


def _name(r: Result) -> str:
    return r.artifact.display_label(backend=False)


def _quality(r: Result) -> str:
    pct = quality_pct(r)
    return f"KLD {kld(r.quality.vs_baseline.kld_mean)}" + (f", quality {pct:.1f}%" if pct is not None else "")


def _kernel(r: Result) -> str:
    own = "" if not plots.hollow(r) else " (hollow: speed and cost are this kernel path's, not the format's)"
    return f"{r.runtime.runtime}/{r.runtime.kernel}{own}"


def quality_vs_size(results: list[Result]) -> str | None:
    points = plots.scored(results)
    if len(points) < 2:
        return None
    xy = [(r.artifact.disk_bytes / 1e6, r.quality.vs_baseline.kld_mean) for r in points]
    marks = [
        Mark(x, y, _name(r), f"{r.artifact.display_label(backend=True)}: {x:,.1f} MB, {_quality(r)}; {_kernel(r)}",
             hollow=plots.hollow(r))
        for r, (x, y) in zip(points, xy, strict=True)
    ]  # fmt: skip
    front = Line(plots.pareto(xy), "Pareto frontier", series=1, dashed=True)
    chart = Chart("Quality vs size (lower left is better)", "size on disk (MB)", "mean KLD from the baseline (log)",
                  marks, [front], ylog=True)  # fmt: skip
    return render(chart) + legend([("Pareto frontier", 1, True)])


def cost_vs_quality(results: list[Result]) -> str | None:
    rows = plots.cost_points(results)
    if len(rows) < 2:
        return None
    marks = [
        Mark(r.quality.vs_baseline.kld_mean, usd, _name(r),
             f"{r.artifact.display_label(backend=True)}: ${usd:.4f} per 1M tokens ({r.rig.name} rig), "
             f"{_quality(r)}; {_kernel(r)}", hollow=plots.hollow(r), series=2)
        for r, usd in rows
    ]  # fmt: skip
    chart = Chart("Cost vs quality (hollow: dequantized/emulated speed)", "mean KLD from the baseline (log)",
                  f"$ per 1M tokens, batch-1 decode ({rows[0][0].rig.name} rig)", marks, xlog=True)  # fmt: skip
    return render(chart)


def _served_hollow(r: Result) -> bool:
    return r.target is None and plots.hollow(r)


def throughput_vs_concurrency(results: list[Result]) -> str | None:
    served = plots.served_runs(results)
    if not served:
        return None
    marks, lines, keys = [], [], []
    for i, r in enumerate(served):
        levels = sorted(r.load.levels, key=lambda lv: lv.concurrency)
        name = plots.served_label(r)
        lines.append(Line([(lv.concurrency, lv.total_tok_s) for lv in levels], name, i, dashed=not r.load.batches))
        keys.append((name, i, not r.load.batches))
        marks += [
            Mark(lv.concurrency, lv.total_tok_s, "", f"{subject(r)} on {r.load.engine}, concurrency {lv.concurrency}: "
                 f"{lv.total_tok_s:,.1f} total tok/s, {lv.output_tok_s:,.1f} output tok/s",
                 hollow=_served_hollow(r), series=i)
            for lv in levels
        ]  # fmt: skip
    chart = Chart("Served throughput vs concurrency", "concurrent requests (log)", "total tok/s (prompt + output)",
                  marks, lines, xlog=True)  # fmt: skip
    return render(chart) + legend(keys)


def ttft_vs_throughput(results: list[Result]) -> str | None:
    """Latency bought with throughput: each served run's levels, from low to high concurrency."""
    served = [r for r in plots.served_runs(results) if any(lv.ttft_ms for lv in r.load.levels)]
    if not served:
        return None
    marks, lines, keys = [], [], []
    for i, r in enumerate(served):
        levels = sorted((lv for lv in r.load.levels if lv.ttft_ms), key=lambda lv: lv.concurrency)
        name = plots.served_label(r)
        lines.append(Line([(lv.output_tok_s, lv.ttft_ms.median) for lv in levels], name, i))
        keys.append((name, i, False))
        marks += [
            Mark(lv.output_tok_s, lv.ttft_ms.median, f"c={lv.concurrency}",
                 f"{subject(r)} on {r.load.engine}, concurrency {lv.concurrency}: TTFT p50 {lv.ttft_ms.median:,.0f} "
                 f"ms, p99 {lv.ttft_ms.p99:,.0f} ms at {lv.output_tok_s:,.1f} output tok/s",
                 hollow=_served_hollow(r), series=i)
            for lv in levels
        ]  # fmt: skip
    chart = Chart("Time to first token vs throughput (lower right is better)", "output tok/s",
                  "TTFT p50 (ms, log)", marks, lines, ylog=True)  # fmt: skip
    return render(chart) + legend(keys)


CHARTS = {
    "quality-vs-size": quality_vs_size,
    "cost-vs-quality": cost_vs_quality,
    "throughput-vs-concurrency": throughput_vs_concurrency,
    "ttft-vs-throughput": ttft_vs_throughput,
}


def render_all(results: list[Result]) -> dict[str, str]:
    """Each chart the records hold data for, by name, in the PNG report's order (TTFT last)."""
    return {name: svg for name, make in CHARTS.items() if (svg := make(results)) is not None}
