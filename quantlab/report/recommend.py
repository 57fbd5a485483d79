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
"""

from __future__ import annotations

from dataclasses import dataclass

from quantlab.errors import ResultsError
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
    on_rig = [r for r in results if r.rig.name == rig]
    if not on_rig:
        raise ResultsError(
            f"no results measured on rig {rig!r}; rigs in the file: {', '.join(sorted({r.rig.name for r in results}))}"
        )
    quality = {r.artifact.digest: r for r in on_rig if r.quality and r.quality.vs_baseline}
    priced = [r for r in on_rig if (r.load is not None) == (basis == "served")]
    considered, excluded = [], []
    for r in priced:
        label = r.artifact.display_label(backend=True)
        cost = next((c for c in r.cost if c.basis == basis and c.batch_size == at), None)
        scored = quality.get(r.artifact.digest)
        if cost is None:
            excluded.append(
                (label, f"no {basis} measurement at {'concurrency' if basis == 'served' else 'batch'} {at}")
            )
            continue
        if scored is None:
            excluded.append((label, "no quality record against a baseline"))
            continue
        pct = scored.quality.recovery_pct()
        measured = scored.memory or r.memory
        memory = measured.peak_bytes if measured else r.artifact.weight_bytes
        kind = measured.kind if measured else "weight bytes (no measured peak)"
        candidate = Candidate(
            label=label,
            digest=r.artifact.digest,
            quality_pct=pct,
            memory_bytes=memory,
            memory_kind=kind,
            usd_per_1m=cost.usd_per_1m_tokens,
            tokens_per_second=cost.tokens_per_second,
            kernel=r.runtime.kernel,
        )
        if pct < min_quality:
            excluded.append((candidate.label, f"quality {pct:.1f}% < {min_quality:g}%"))
        elif max_memory_gb is not None and memory > max_memory_gb * 1e9:
            excluded.append((candidate.label, f"memory {memory / 1e9:.2f} GB > {max_memory_gb:g} GB"))
        else:
            considered.append(candidate)
    considered.sort(key=lambda c: c.usd_per_1m)
    return Recommendation(
        winner=considered[0] if considered else None,
        runner_up=considered[1] if len(considered) > 1 else None,
        considered=considered,
        excluded=excluded,
        basis=basis,
    )


def explain(rec: Recommendation, *, rig: str, min_quality: float, max_memory_gb: float | None, at: int) -> str:
    where = f"{'concurrency' if rec.basis == 'served' else 'batch'} {at}"
    limits = f"quality ≥ {min_quality:g}% of the baseline (perplexity recovery)" + (
        f", memory ≤ {max_memory_gb:g} GB" if max_memory_gb is not None else ""
    )
    lines = []
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
