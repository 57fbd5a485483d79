"""The report's plots, from results only: quality vs size (with the Pareto frontier), $/1M vs quality, and
throughput vs concurrency. Each returns PNG bytes (or None when the results hold nothing to plot), so the HTML
report can embed them and `quantlab run` can write them next to the results.

Quality is the mean KL divergence from the baseline (log scale: near-lossless formats sit at 1e-4, 4-bit ones
near 1). Size is bytes on disk. Cells from `dequantized`/`emulated` kernel paths are drawn hollow: their size
and quality are the format's, their speed and cost are not. Points are named without the backend
(`ArtifactRef.display_label(backend=False)`): the labels crowd the axes as it is.
"""

from __future__ import annotations

import io

from quantlab.report.selection import subject
from quantlab.results import Result, speed_is_formats_own


def _figure():
    import matplotlib

    matplotlib.use("Agg")  # no display; also keeps notebooks and CI headless
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(7.5, 4.8), dpi=110)


def png(fig) -> bytes:
    """A figure as PNG bytes, closed after: every plot quantlab writes, the benchmarks' included."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    # no timestamp or software tag in the file: the same results give the same bytes
    fig.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def hollow(r: Result) -> bool:
    """Drawn hollow: its size and quality are the format's, its speed and cost are its kernel path's."""
    return not speed_is_formats_own(r.runtime.kernel)


def _labels(ax, points: list[tuple[float, float, str]]) -> None:
    """Label each point where its text overlaps no earlier label: formats of one size (int8 and FP8, NF4 and
    NVFP4) sit on top of each other, and stacked labels are unreadable. Deterministic, so the PNG bytes are."""
    ax.figure.canvas.draw()  # fixes the limits, so data → pixel is final
    placed: list[tuple[float, float, float, float]] = []
    for x, y, text in sorted(points, key=lambda p: (p[1], p[0]), reverse=True):
        px, py = ax.transData.transform((x, y))
        width, height = 4.3 * len(text) + 2, 9
        for dx, dy in ((4, 3), (4, -10), (4, 13), (4, -20), (4, 23), (-width - 4, 3), (-width - 4, -10)):
            box = (px + dx * 1.53, py + dy * 1.53, px + dx * 1.53 + width * 1.53, py + dy * 1.53 + height * 1.53)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                break
        placed.append(box)
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=7)


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both axes (smaller x and smaller y are better), by x."""
    frontier, best = [], float("inf")
    for x, y in sorted(points):
        if y < best:
            frontier.append((x, y))
            best = y
    return frontier


def scored(results: list[Result]) -> list[Result]:
    """The records a quality axis can show: scored against a baseline, and not the baseline itself (KLD 0 has no
    place on a log axis)."""
    return [r for r in results if r.quality and r.quality.vs_baseline and r.quality.vs_baseline.kld_mean > 0]


def cost_points(results: list[Result]) -> list[tuple[Result, float]]:
    """Each scored record with its $/1M at its smallest in-process decode batch (batch 1 where measured)."""
    rows = []
    for r in scored(results):
        cost = next((c for c in sorted(r.cost, key=lambda c: c.batch_size) if c.basis == "decode"), None)
        if cost is not None:
            rows.append((r, cost.usd_per_1m_tokens))
    return rows


def served_runs(results: list[Result]) -> list[Result]:
    return [r for r in results if r.load is not None and r.load.levels]


def served_label(r: Result) -> str:
    """A served run's legend entry: what, on which engine, and whether that engine batched."""
    name = subject(r, backend=False)
    return f"{name} ({r.load.engine}{'' if r.load.batches or r.target else ', not batched'})"


def quality_vs_size(results: list[Result]) -> bytes | None:
    points = scored(results)
    if len(points) < 2:
        return None
    fig, ax = _figure()
    for r in points:
        x, y = r.artifact.disk_bytes / 1e6, r.quality.vs_baseline.kld_mean
        ax.scatter([x], [y], s=40, facecolors="none" if hollow(r) else "C0", edgecolors="C0")
    front = pareto([(r.artifact.disk_bytes / 1e6, r.quality.vs_baseline.kld_mean) for r in points])
    ax.plot([p[0] for p in front], [p[1] for p in front], "C1--", lw=1, label="Pareto frontier")
    ax.set_xlabel("size on disk (MB)")
    ax.set_ylabel("mean KL divergence from the baseline (log)")
    ax.set_yscale("log")
    ax.set_title("Quality vs size (lower left is better)")
    ax.legend(fontsize=8)
    _labels(
        ax,
        [
            (r.artifact.disk_bytes / 1e6, r.quality.vs_baseline.kld_mean, r.artifact.display_label(backend=False))
            for r in points
        ],
    )
    return png(fig)


def cost_vs_quality(results: list[Result]) -> bytes | None:
    """$/1M tokens at batch 1 (in-process decode) against KLD."""
    rows = cost_points(results)
    if len(rows) < 2:
        return None
    fig, ax = _figure()
    for r, usd in rows:
        x = r.quality.vs_baseline.kld_mean
        ax.scatter([x], [usd], s=40, facecolors="none" if hollow(r) else "C2", edgecolors="C2")
    ax.set_xscale("log")
    ax.set_xlabel("mean KL divergence from the baseline (log)")
    ax.set_ylabel(f"$ per 1M tokens, batch-1 decode ({rows[0][0].rig.name} rig)")
    ax.set_title("Cost vs quality (hollow: dequantized/emulated speed)")
    _labels(ax, [(r.quality.vs_baseline.kld_mean, usd, r.artifact.display_label(backend=False)) for r, usd in rows])
    return png(fig)


def throughput_vs_concurrency(results: list[Result]) -> bytes | None:
    served = served_runs(results)
    if not served:
        return None
    fig, ax = _figure()
    for i, r in enumerate(served):
        levels = sorted(r.load.levels, key=lambda lv: lv.concurrency)
        style = "-" if r.load.batches else ":"
        ax.plot(
            [lv.concurrency for lv in levels],
            [lv.total_tok_s for lv in levels],
            style,
            marker="o",
            color=f"C{i % 10}",
            label=served_label(r),
        )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent requests")
    ax.set_ylabel("total tok/s (prompt + output)")
    ax.set_title("Served throughput vs concurrency")
    ax.legend(fontsize=7)
    return png(fig)


PLOTS = {
    "quality-vs-size": quality_vs_size,
    "cost-vs-quality": cost_vs_quality,
    "throughput-vs-concurrency": throughput_vs_concurrency,
}


def render_all(results: list[Result]) -> dict[str, bytes]:
    return {name: png for name, make in PLOTS.items() if (png := make(results)) is not None}
