"""The quality-detail table: llama-perplexity's `--kl-divergence` statistics for every artifact whose record holds
them, so a reader who compares quants by llama.cpp's printout finds the same figures, in its definitions.

The main table keeps one KLD column (the mean); the tails are where formats of equal mean part (a quant that is
fine on most tokens and badly wrong on a few shows it in the 99.9 % KLD and the low Δp percentiles, not the mean).
"""

from __future__ import annotations

import pandas as pd

from quantlab.report.selection import host
from quantlab.report.tables import fmt, kld, with_hosts
from quantlab.results import Result

COLUMNS = [
    "method",
    "scheme",
    "host",
    "KLD mean ± se",
    "KLD median",
    "KLD 90 %",
    "KLD 99 %",
    "KLD 99.9 %",
    "KLD max",
    "Δp mean ± se %",
    "RMS Δp %",
    "Δp 1 % / 99 %",
    "same top p %",
    "r(NLL)",
]


def _pct(value: float) -> str:
    return f"{100 * value:.3f}"


def quality_detail_table(results: list[Result]) -> pd.DataFrame:
    rows = []
    for r in results:
        vs = r.quality.vs_baseline if r.quality and r.load is None else None
        if vs is None or vs.detail is None:
            continue
        d = vs.detail
        rows.append(
            {
                "method": r.artifact.display_label(backend=True, scheme=False),
                "scheme": r.artifact.label,
                "host": host(r),
                "KLD mean ± se": f"{kld(vs.kld_mean)} ± {kld(d.kld_mean_stderr)}",
                "KLD median": kld(d.kld.median),
                "KLD 90 %": kld(d.kld.p90),
                "KLD 99 %": kld(d.kld.p99),
                "KLD 99.9 %": kld(d.kld.p99_9),
                "KLD max": kld(d.kld.max),
                "Δp mean ± se %": f"{_pct(d.delta_p_mean)} ± {_pct(d.delta_p_mean_stderr)}",
                "RMS Δp %": _pct(d.delta_p_rms),
                "Δp 1 % / 99 %": f"{_pct(d.delta_p.p1)} / {_pct(d.delta_p.p99)}",
                "same top p %": fmt(100 * vs.top1_agreement, 2),
                "r(NLL)": f"{d.nll_correlation:.4f}",
            }
        )
    return with_hosts(rows, results, COLUMNS) if rows else pd.DataFrame()


def quality_detail_notes(results: list[Result]) -> list[str]:
    if quality_detail_table(results).empty:
        return []
    return [
        "Quality in detail: llama-perplexity's --kl-divergence statistics, in its definitions, over the same "
        "scored tokens as the main table (quantlab scores every position of a window; llama-perplexity only "
        "the second half of each, so set its printout beside these only for the same positions). KLD "
        "percentiles are of the per-token KL(baseline ‖ model), interpolated linearly as llama.cpp does; Δp = "
        "p_model(right token) − p_baseline(right token), in percentage points; se = standard error of the mean; "
        "same top p = the share of tokens where both put their top-1 on the same token (the main table's "
        "top-1); r(NLL) = the correlation of the two models' per-token NLLs (llama.cpp's Cor(ln PPL(Q), "
        "ln PPL(base)))."
    ]
