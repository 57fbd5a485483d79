"""The report's tables, one DataFrame each, from selected results only (see `selection`).

Cells are formatted strings, not numbers, because the table is what a reader sees: a speed measured on a kernel
path that is not the format's own carries its † mark in the cell itself, so a copied row cannot lose it.
"""

from __future__ import annotations

import pandas as pd

from quantlab.report.selection import (
    compiled,
    host,
    own_speed,
    quality_pct,
    scheme,
    spans_hosts,
    speed_at,
    subject,
    with_artifact,
)
from quantlab.results import Result

MAIN_COLUMNS = [
    "method",
    "scheme",
    "size on disk MB",
    "peak memory MB",
    "prefill tok/s",
    "decode tok/s",
    "% of BW limit",
    "$/1M",
    "quality %",
    "ppl",
    "Δppl %",
    "KLD",
    "top-1 %",
    "runtime/kernel",
]


def fmt(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def kld(value: float) -> str:
    # Near-lossless formats sit at 1e-6…1e-4: fixed decimals would print them all as 0.
    return f"{value:.2e}" if value < 1e-3 else f"{value:.5f}"


def _ms(dist) -> str:
    return "–" if dist is None else f"{dist.median:,.0f} / {dist.p99:,.0f}"


def cell_key(result: Result) -> tuple:
    """What one † footnote is about: an artifact on one runtime, kernel path and host, whatever its batch
    sizes (another host's kernel path may be another one)."""
    return result.artifact.digest, result.runtime.runtime, result.runtime.kernel, host(result)


def mark_numbers(results: list[Result]) -> dict[tuple, int]:
    """Footnote numbers for the cells whose speed is not the format's own, in table order.

    Every table numbers from the same list, so †2 means the same cell everywhere in one report.
    """
    numbers: dict[tuple, int] = {}
    for r in results:
        if not own_speed(r) and cell_key(r) not in numbers:
            numbers[cell_key(r)] = len(numbers) + 1
    return numbers


def kernel_mark(result: Result, marks: dict[tuple, int]) -> str:
    return "" if own_speed(result) else f" †{marks[cell_key(result)]}"


def with_hosts(rows: list[dict], results: list[Result], columns: list[str] | None = None) -> pd.DataFrame:
    """The table, with its rows' `host` column only when the report spans hosts: speed, memory and price are a
    machine's, so rows from two machines must say which; a single-host report stays as it always was."""
    table = pd.DataFrame(rows, columns=columns)
    return table if spans_hosts(results) else table.drop(columns="host", errors="ignore")


def main_table(results: list[Result]) -> pd.DataFrame:
    """The guide's quantization tradeoff table: format, memory, speed, $/1M and quality % of the baseline."""
    rows, marks = [], mark_numbers(results)
    for r in results:
        if r.load is not None:
            continue  # a served run has its own table (load_table)
        point = speed_at(r)
        cost = next((c for c in r.cost if point and c.batch_size == point.batch_size), None)
        vs = r.quality.vs_baseline if r.quality else None
        mark = kernel_mark(r, marks)
        rows.append(
            {
                "method": r.artifact.display_label(backend=True, scheme=False),
                "scheme": scheme(r),
                "host": host(r),
                "size on disk MB": fmt(r.artifact.disk_bytes / 1e6, 1),
                "peak memory MB": (fmt(r.memory.peak_bytes / 1e6, 0) + mark) if r.memory else "–",
                "prefill tok/s": (fmt(point.prefill_tok_s.median, 0) + mark) if point else "–",
                "decode tok/s": (fmt(point.decode_tok_s.median, 1) + mark) if point else "–",
                "% of BW limit": fmt(r.roofline.pct_of_limit, 0)
                if r.roofline and point and point.batch_size == 1
                else "–",
                "quality %": fmt(quality_pct(r), 1),
                "ppl": fmt(r.quality.ppl if r.quality else None, 3),
                "Δppl %": fmt(vs.delta_ppl_pct if vs else None, 2),
                "KLD": kld(vs.kld_mean) if vs else "–",
                "top-1 %": fmt(vs.top1_agreement * 100 if vs else None, 2),
                "$/1M": (f"{cost.usd_per_1m_tokens:.3f} ({r.rig.name})" + mark) if cost else "–",
                "runtime/kernel": f"{r.runtime.runtime}/{r.runtime.kernel} {r.runtime.compute_dtype}"
                + (f", {r.runtime.kernel_option}" if r.runtime.kernel_option else "")
                + (", compiled" if compiled(r) else ""),
            }
        )
    return with_hosts(rows, results, [*MAIN_COLUMNS[:2], "host", *MAIN_COLUMNS[2:]])


def tasks_table(results: list[Result]) -> pd.DataFrame:
    rows = []
    for r in results:
        if r.tasks is None:
            continue
        for score in r.tasks.scores:
            rows.append(
                {
                    "method": r.artifact.display_label(backend=True, scheme=False),
                    "scheme": r.artifact.label,
                    "host": host(r),
                    "task": score.task,
                    "metric": score.metric + ("" if score.higher_is_better else " (lower is better)"),
                    "score": f"{score.value:.4f}" + (f" ± {score.stderr:.4f}" if score.stderr is not None else ""),
                    "baseline": fmt(score.baseline, 4),
                    "recovery %": fmt(score.recovery_pct, 1),
                    "docs": score.n_samples,
                }
            )
    return with_hosts(rows, results)


def load_table(results: list[Result]) -> pd.DataFrame:
    """The guide's batching table, from served runs: one row per artifact × engine × concurrency level.

    Columns for the other levers appear only when some run used them: "options" (KV-cache type, prefix cache,
    shared prompt prefix), "SLO met / goodput" (with --slo), and the engine's own prefill counters."""
    rows, marks = [], mark_numbers(with_artifact(results))  # numbered as every other table numbers them
    served = [r for r in results if r.load is not None]
    show_options = any(not r.load.options.plain or r.load.shared_prefix_tokens for r in served)
    show_slo = any(r.load.slo is not None for r in served)
    show_prefill = show_options and any(lv.engine_counters for r in served for lv in r.load.levels)
    show_spec = any(r.load.options.speculative for r in served)
    for r in served:
        sweep, mark = r.load, ("" if r.target else kernel_mark(r, marks))  # external: no kernel to mark
        base = next((lv for lv in sweep.levels if lv.concurrency == 1), None)
        for lv in sweep.levels:
            cost = next((c for c in r.cost if c.basis == "served" and c.batch_size == lv.concurrency), None)
            gain = f"{lv.total_tok_s / base.total_tok_s:.1f}×" if base and base.total_tok_s > 0 else "–"
            row = {
                "method": subject(r, scheme=False),
                "scheme": scheme(r) if r.target else r.artifact.label,
                "host": host(r),
                "engine": _engine(sweep),
            }
            if show_options:
                row["options"] = serving_label(sweep)
            row |= {
                "concurrency": lv.concurrency,
                "ok/errors": f"{lv.completed}/{lv.errors}",
                "total tok/s": fmt(lv.total_tok_s, 1) + mark,
                "output tok/s": fmt(lv.output_tok_s, 1) + mark,
                "vs c=1": gain,
                "req/s": fmt(lv.requests_per_s, 2),
                "TTFT ms p50/p99": _ms(lv.ttft_ms),
                "TPOT ms p50/p99": _ms(lv.tpot_ms),
                "ITL ms p50/p99": _ms(lv.itl_ms),
            }
            if show_prefill:
                row["prefill computed / cached tok"] = _prefill(lv)
            if show_spec:
                row["draft accepted % / tok per step"] = _drafts(lv) if sweep.options.speculative else "–"
                row["greedy check"] = _greedy(sweep)
            if show_slo:
                row["SLO met / goodput req/s"] = _goodput(lv)
            row["$/1M out"] = (f"{cost.usd_per_1m_tokens:.3f} ({r.rig.name})" + mark) if cost else "–"
            rows.append(row)
    return with_hosts(rows, results)


def _engine(sweep) -> str:
    if sweep.engine == "external":  # quantlab did not start it: whether and how it batches is not known
        return f"external {sweep.engine_version} (batching unknown)"
    return (
        f"{sweep.engine}{'' if sweep.batches else ' (not batched)'}{'' if sweep.engine_verified else ' (unverified)'}"
    )


def serving_label(sweep) -> str:
    label = sweep.options.label()
    if sweep.shared_prefix_tokens:
        prefix = f"{sweep.shared_prefix_tokens}-token shared prefix"
        label = prefix if label == "plain" else f"{label}, {prefix}"
    return label


def _prefill(level) -> str:
    c = level.engine_counters
    return "–" if c is None else f"{c.prompt_tokens_computed:,} / {c.prompt_tokens_cached:,}"


def _drafts(level) -> str:
    c = level.engine_counters
    if c is None:
        return "–"
    if not c.draft_tokens:
        return "no drafts"
    per_step = c.tokens_per_step(level.output_tokens - level.completed)  # the first token of each is prefill's
    return f"{100 * c.acceptance:.0f}% / {per_step:.2f}" if per_step else f"{100 * c.acceptance:.0f}% / –"


def _greedy(sweep) -> str:
    check = sweep.greedy_check
    if check is None:
        return "–"
    return f"{check.identical}/{check.prompts} identical" + ("" if check.passed else " ✗")


def _goodput(level) -> str:
    if level.slo_met is None or level.goodput_rps is None:
        return "–"
    share = 100 * level.slo_met / level.requests if level.requests else 0.0
    return f"{share:.0f}% / {level.goodput_rps:.2f}"


def batch_table(results: list[Result]) -> pd.DataFrame:
    rows, marks = [], mark_numbers(results)
    for r in results:
        for p in r.speed:
            cost = next((c for c in r.cost if c.batch_size == p.batch_size), None)
            mark = kernel_mark(r, marks)
            rows.append(
                {
                    "method": r.artifact.display_label(backend=True, scheme=False),
                    "scheme": scheme(r),
                    "host": host(r),
                    "batch": p.batch_size,
                    "prefill tok/s": f"{p.prefill_tok_s.median:,.0f} [{p.prefill_tok_s.min:,.0f}–"
                    f"{p.prefill_tok_s.max:,.0f}]{mark}",
                    "decode tok/s": f"{p.decode_tok_s.median:,.1f} [{p.decode_tok_s.min:,.1f}–"
                    f"{p.decode_tok_s.max:,.1f}]{mark}",
                    "TTFT ms": fmt(p.ttft_ms.median, 1),
                    "TPOT ms": fmt(p.tpot_ms.median, 1),
                    "$/1M": (f"{cost.usd_per_1m_tokens:.3f}" + mark) if cost else "–",
                }
            )
    return with_hosts(rows, results)


def tensor_types(r: Result) -> str:
    return ", ".join(f"{t}×{n}" for t, n in r.artifact.gguf.tensor_types.items())


def gguf_table(results: list[Result]) -> pd.DataFrame:
    """What llama.cpp wrote into each GGUF: the type name is a recipe, the census is the fact."""
    rows = []
    for r in results:
        g = r.artifact.gguf
        if g is None or r.load is not None:  # a served run holds the same file: one census per artifact
            continue
        vs = r.quality.vs_baseline if r.quality else None
        rows.append(
            {
                "scheme": scheme(r),
                "host": host(r),
                "bits/weight": f"{g.bits_per_weight:.2f}",
                "tensor types written": tensor_types(r),
                "fallbacks": len(g.fallbacks),
                "imatrix": "yes" if g.imatrix else "no",
                "KLD": kld(vs.kld_mean) if vs else "–",
            }
        )
    return with_hosts(rows, results)
