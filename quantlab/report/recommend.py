"""`quantlab recommend`: the cheapest format per 1M tokens on a rig that meets the user's constraints.

From results only. Every candidate is one artifact measured on the rig:
- quality % = 100 × baseline ppl / ppl (perplexity recovery against the baseline the results were scored
  against; 100 % = no loss), from the artifact's in-process record;
- memory = its measured peak (in-process record: peak RSS on CPU, peak allocated on CUDA; else the weights);
- $/1M = the rig's price over the measured tokens/s at one operating point: `--basis decode` (in-process
  decode at batch `--at`) or `--basis served` (served output tokens at concurrency `--at`).
The answer names the winner, why (the constraints it meets and the price), the runner-up and how much more it
costs, and which candidates were excluded and why. A price measured on a `dequantized` or `emulated` kernel
path is not the format's own: such a winner carries that warning.

Candidates are compared under the report's rule (`selection.comparable`): the newest record per configuration,
quality scored against one baseline on one token stream, on one host. The answer says which baseline and host it
rests on, and records of another host or baseline are excluded, each with that reason, never ranked beside them.
"""

from __future__ import annotations

from dataclasses import dataclass

from quantlab.errors import ResultsError
from quantlab.report.selection import comparable, host, select
from quantlab.results import Result, speed_is_formats_own


@dataclass(frozen=True)
class Candidate:
    label: str
    digest: str
    quality_pct: float
    memory_bytes: int
    memory_kind: str
    usd_per_1m: float
    tokens_per_second: float
    kernel: str


@dataclass(frozen=True)
class Recommendation:
    winner: Candidate | None
    runner_up: Candidate | None
    considered: list[Candidate]
    excluded: list[tuple[str, str]]  # (label, reason)
    basis: str
    baseline: str | None = None  # the baseline every quality figure is against ("label, digest")
    host: str | None = None  # the machine every figure was measured on


def recommend(
    results: list[Result],
    *,
    rig: str,
    min_quality: float = 0.0,
    max_memory_gb: float | None = None,
    basis: str = "decode",
    at: int = 1,
) -> Recommendation:
    if basis not in ("decode", "served"):
        raise ResultsError(f"--basis must be decode or served, not {basis!r}")
    on_rig = select([r for r in results if r.rig.name == rig])
    if not on_rig:
        raise ResultsError(
            f"no results measured on rig {rig!r}; rigs in the file: {', '.join(sorted({r.rig.name for r in results}))}"
        )
    scored = comparable(on_rig)
    quality = {r.artifact.digest: r for r in scored}
    where = host(scored[0]) if scored else None
    priced = [r for r in on_rig if (r.load is not None) == (basis == "served")]
    considered, excluded = [], []
    for r in priced:
        if r.target is not None:  # never a candidate: a choice rests on quality, and nothing scored its weights
            excluded.append((r.target.label(), "an external server (--target): no artifact measured, so no quality"))
            continue
        label = r.artifact.display_label(backend=True)
        own = r.load is None and r.quality is not None and r.quality.vs_baseline is not None
        scored_by = (r if any(r is x for x in scored) else None) if own else quality.get(r.artifact.digest)
        candidate, reason = _candidate(r, scored_by, basis, at, where)
        if candidate is None:
            excluded.append((label, reason))
        elif candidate.quality_pct < min_quality:
            excluded.append((label, f"quality {candidate.quality_pct:.1f}% < {min_quality:g}%"))
        elif max_memory_gb is not None and candidate.memory_bytes > max_memory_gb * 1e9:
            excluded.append((label, f"memory {candidate.memory_bytes / 1e9:.2f} GB > {max_memory_gb:g} GB"))
        else:
            considered.append(candidate)
    considered.sort(key=lambda c: c.usd_per_1m)
    return Recommendation(
        winner=considered[0] if considered else None,
        runner_up=considered[1] if len(considered) > 1 else None,
        considered=considered,
        excluded=excluded,
        basis=basis,
        baseline=_baseline(scored[0]) if scored else None,
        host=where,
    )


def _baseline(r: Result) -> str:
    vs = r.quality.vs_baseline
    return f"{vs.baseline_label} (digest {vs.baseline_digest})"


def _candidate(
    r: Result, scored: Result | None, basis: str, at: int, where: str | None
) -> tuple[Candidate | None, str]:
    """`r` priced at its `basis` point, its quality from `scored` (itself when it was scored in the comparable
    group; for a served or speed-only record, its artifact's record there), or why it cannot be a candidate."""
    if where is not None and host(r) != where:
        return None, f"measured on {host(r)}; the comparison rests on {where}"
    cost = next((c for c in r.cost if c.basis == basis and c.batch_size == at), None)
    if cost is None:
        return None, f"no {basis} measurement at {'concurrency' if basis == 'served' else 'batch'} {at}"
    if scored is None:
        if r.quality and r.quality.vs_baseline:
            return None, f"scored against another baseline or token stream ({_baseline(r)})"
        return None, "no quality record against a baseline"
    measured = scored.memory or r.memory
    return Candidate(
        label=r.artifact.display_label(backend=True),
        digest=r.artifact.digest,
        quality_pct=scored.quality.recovery_pct(),
        memory_bytes=measured.peak_bytes if measured else r.artifact.weight_bytes,
        memory_kind=measured.kind if measured else "weight bytes (no measured peak)",
        usd_per_1m=cost.usd_per_1m_tokens,
        tokens_per_second=cost.tokens_per_second,
        kernel=r.runtime.kernel,
    ), ""


def explain(rec: Recommendation, *, rig: str, min_quality: float, max_memory_gb: float | None, at: int) -> str:
    where = f"{'concurrency' if rec.basis == 'served' else 'batch'} {at}"
    limits = f"quality ≥ {min_quality:g}% of the baseline (perplexity recovery)" + (
        f", memory ≤ {max_memory_gb:g} GB" if max_memory_gb is not None else ""
    )
    lines = []
    if rec.baseline is not None:
        lines.append(
            f"Compared on {rec.host}, quality against the baseline {rec.baseline}; records of other hosts or "
            "baselines are not ranked beside them."
        )
    if rec.winner is None:
        lines.append(f"No format on rig {rig} meets {limits} with a {rec.basis} price at {where}.")
    else:
        w = rec.winner
        lines.append(
            f"Recommended on {rig}: {w.label}: ${w.usd_per_1m:.4f} per 1M tokens ({w.tokens_per_second:,.1f} "
            f"tok/s, {rec.basis} at {where}), quality {w.quality_pct:.1f}%, memory "
            f"{w.memory_bytes / 1e9:.2f} GB ({w.memory_kind})."
        )
        lines.append(f"Why: the cheapest of {len(rec.considered)} format(s) that meet {limits}.")
        if not speed_is_formats_own(w.kernel):
            lines.append(
                f"Caution: it ran on a '{w.kernel}' kernel path here: its speed, so its price, is not "
                "the format's own on hardware that runs it natively."
            )
        if rec.runner_up is not None:
            r = rec.runner_up
            lines.append(
                f"Runner-up: {r.label}: ${r.usd_per_1m:.4f} per 1M tokens "
                f"(+{100 * (r.usd_per_1m / w.usd_per_1m - 1):.0f}%), quality {r.quality_pct:.1f}%, memory "
                f"{r.memory_bytes / 1e9:.2f} GB."
            )
    lines += [f"Excluded: {label}: {reason}." for label, reason in rec.excluded]
    lines.append(
        "$/1M tokens = price_per_hour / (tokens_per_second × 3600) × 1e6, with the rig price recorded in each result."
    )
    return "\n".join(lines)
