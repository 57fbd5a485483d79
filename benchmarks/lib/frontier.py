"""The size/quality frontier of a set of GGUF artifacts, from their held-out records: the table (frontier marked),
the comparison of each tuned artifact with the best other one (stock llama.cpp or AutoRound) of equal or smaller
size, and the plot."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

WIN = 0.10  # the margin a tuned artifact must beat the best other one of equal or smaller size by


@dataclass(frozen=True)
class Point:
    name: str
    bytes: int  # the GGUF file
    bpw: float
    kld: float  # held-out mean KLD against the baseline
    ppl: float
    top1: float
    types: str  # tensor types as written
    maker: str = "llama.cpp"  # who chose the rounding: llama.cpp's quantizer, AutoRound, or quantlab tune
    budget: int = 0
    predicted: float = 0.0
    matrix: str = ""  # tune's importance-matrix decision, e.g. "per group (15 of 36 groups rounded without it)"

    @property
    def tuned(self) -> bool:
        return self.maker == "tune"

    @classmethod
    def of(cls, name: str, artifact, record) -> Point:
        gguf = artifact.manifest.gguf
        vs = record.quality.vs_baseline
        tune = gguf.tune
        return cls(
            name=name,
            bytes=(artifact.path / gguf.file).stat().st_size,
            bpw=gguf.bits_per_weight,
            kld=vs.kld_mean,
            ppl=record.quality.ppl,
            top1=vs.top1_agreement,
            types=", ".join(f"{t}×{n}" for t, n in gguf.tensor_types.items()),
            maker="tune" if tune else ("AutoRound" if artifact.manifest.spec.method == "autoround" else "llama.cpp"),
            budget=tune.max_bytes or 0 if tune else 0,
            predicted=tune.predicted_kld if tune else 0.0,
            matrix=_matrix(tune) if tune else "",
        )


def _matrix(tune) -> str:
    """The decision and how many groups were rounded without the matrix (the embedding, which it has no entry
    for, always is)."""
    decision = (tune.imatrix or "").split(":")[0]
    without = sum(g.imatrix is False for g in tune.groups)
    return f"{decision} ({without} of {len(tune.groups)} groups rounded without it)" if decision else ""


def on_frontier(point: Point, points: list[Point]) -> bool:
    """No other point is as small or smaller and strictly better, nor strictly smaller and as good: the report's
    own Pareto frontier (identical points are both on it)."""
    from quantlab.report.plots import pareto

    return (point.bytes, point.kld) in set(pareto([(p.bytes, p.kld) for p in points]))


def best_stock_within(point: Point, stock: list[Point]) -> Point | None:
    fitting = [s for s in stock if s.bytes <= point.bytes]
    return min(fitting, key=lambda s: s.kld) if fitting else None


def frontier_doc(points: list[Point], results: Path) -> tuple[str, dict[str, bool]]:
    """The markdown report, and per tuned artifact whether it beat the best other one (stock llama.cpp or AutoRound)
    within its size by WIN."""
    stock = [p for p in points if not p.tuned]
    lines = [
        "# GGUF size/quality frontier: llama.cpp's stock types, AutoRound's GGUF export and `quantlab tune`",
        "",
        "| artifact | file MB | bits/weight | held-out KLD | ppl | top-1 % | frontier | tensor types written |",
        "|:--|--:|--:|--:|--:|--:|:--|:--|",
    ]
    for p in sorted(points, key=lambda p: p.bytes):
        mark = "all" if on_frontier(p, points) else ("without tune" if not p.tuned and on_frontier(p, stock) else "")
        lines.append(
            f"| {p.name} | {p.bytes / 1e6:.2f} | {p.bpw:.3f} | {p.kld:.5f} | {p.ppl:.3f} | {100 * p.top1:.2f} | "
            f"{mark} | {p.types} |"
        )
    wins: dict[str, bool] = {}
    lines += ["", "## Each tuned artifact against the best other artifact of equal or smaller size", ""]
    lines += [
        "| tuned | budget MB | predicted KLD | held-out KLD | best other within its size | its KLD | lower by | "
        "importance matrix |"
    ]
    lines += ["|:--|--:|--:|--:|:--|--:|--:|:--|"]
    for p in sorted((p for p in points if p.tuned), key=lambda p: p.bytes):
        best = best_stock_within(p, stock)
        gain = 1 - p.kld / best.kld if best else 1.0
        wins[p.name] = gain >= WIN
        named = f"{best.name} ({best.bytes / 1e6:.2f} MB)" if best else "none"
        lines.append(
            f"| {p.name} | {p.budget / 1e6:.2f} | {p.predicted:.5f} | {p.kld:.5f} | {named} | "
            f"{best.kld if best else float('nan'):.5f} | {100 * gain:.1f}% | {p.matrix} |"
        )
    return "\n".join(lines) + "\n", wins


def plot_frontier(points: list[Point]) -> bytes:
    import matplotlib

    from quantlab.report.plots import png

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    styles = {
        "llama.cpp": dict(marker="o", color="tab:blue", label="stock llama.cpp"),
        "AutoRound": dict(marker="s", color="tab:green", label="AutoRound GGUF"),
        "tune": dict(marker="*", color="tab:red", s=120, label="quantlab tune"),
    }
    for maker, style in styles.items():
        chosen = [p for p in points if p.maker == maker]
        if chosen:
            ax.scatter([p.bytes / 1e6 for p in chosen], [p.kld for p in chosen], **style)
    edge = sorted((p for p in points if on_frontier(p, points)), key=lambda p: p.bytes)
    ax.step([p.bytes / 1e6 for p in edge], [p.kld for p in edge], where="post", color="gray", lw=1, label="frontier")
    for p in points:
        if on_frontier(p, points) or p.tuned:
            ax.annotate(p.name, (p.bytes / 1e6, p.kld), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.set_yscale("log")
    ax.set_xlabel("GGUF file size (MB)")
    ax.set_ylabel("held-out mean KLD vs baseline (log)")
    ax.legend()
    ax.grid(alpha=0.3)
    return png(fig)
