""" "The guide's claims, measured here": one row per lever the inference-cost guide ranks, with the guide's figure,
the figure the results in hand measured, and whether the claim held on this host.

Every figure is computed from two records measured alike (same artifact or model, engine, workload and host),
never copied: a lever's row appears only when the results hold such a pair, and says which. The guide's figures
and the rule for "held" live in CLAIMS, in one place.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from quantlab.report.selection import host, speed_at
from quantlab.results import Result

KLD_NEGLIGIBLE = 0.01  # "negligible quality impact": KLD below this bound, the one a q8_0 KV cache is held to
SIXTEEN_BIT = ("bf16", "fp16")


def _served(results: list[Result]) -> list[Result]:
    return [r for r in results if r.load is not None]


def _workload(r: Result) -> tuple:
    """What two sweeps must share to be compared: artifact, engine, workload, concurrency levels, host."""
    sweep = r.load
    levels = tuple(lv.concurrency for lv in sweep.levels)
    return r.artifact.digest, sweep.engine, sweep.prompt_tokens, sweep.output_tokens, levels, host(r)


def _level(r: Result, concurrency: int):
    return next((lv for lv in r.load.levels if lv.concurrency == concurrency), None)


def _pairs(results: list[Result], lever: Callable[[Result], bool]) -> list[tuple[Result, Result]]:
    """(without the lever, with it): sweeps of one artifact, engine, workload and host, the first with no lever
    on at all (`select` keeps the newest of each, so a pair is the latest measurement of both)."""
    served = _served(results)
    plain = {_workload(r): r for r in served if r.load.options.plain}
    return [(plain[_workload(r)], r) for r in served if lever(r) and _workload(r) in plain]


def _source(r: Result) -> str:
    return f"{r.artifact.display_label(backend=False)} on {r.load.engine if r.load else r.runtime.runtime}, {host(r)}"


def quantization(results: list[Result]) -> dict | None:
    costs = {}
    for r in results:
        point = next((c for c in r.cost if c.basis == "decode" and c.batch_size == 1), None)
        if point and r.load is None:
            costs[r.artifact.digest] = (r, point.usd_per_1m_tokens)
    base = [(r, c) for r, c in costs.values() if r.artifact.method == "none" and r.artifact.label in SIXTEEN_BIT]
    quantized = (
        [(r, c) for r, c in costs.values() if r.artifact.method != "none" and host(r) == host(base[0][0])]
        if base
        else []
    )
    if not quantized:
        return None
    (b, base_cost), (q, cost) = base[0], min(quantized, key=lambda rc: rc[1])
    ratio = base_cost / cost
    return {
        "measured here": f"{b.artifact.label} costs {ratio:.1f}× as much per 1M tokens at batch 1 as the cheapest "
        f"quantized artifact, {q.artifact.display_label(backend=False)} ({base_cost:.3f} vs {cost:.3f} $/1M)",
        "held": ratio >= 4,
        "from": f"in-process decode, {host(q)}",
    }


def batching(results: list[Result]) -> dict | None:
    best = None
    for r in _served(results):
        one = _level(r, 1)
        if not r.load.options.plain or r.load.shared_prefix_tokens or one is None or one.output_tok_s <= 0:
            continue
        top = max(r.load.levels, key=lambda lv: lv.output_tok_s)
        gain = top.output_tok_s / one.output_tok_s
        if best is None or gain > best[0]:
            best = (gain, top.concurrency, r)
    if best is None:
        return None
    gain, concurrency, r = best
    return {
        "measured here": f"{gain:.2f}× output tok/s at concurrency {concurrency} vs 1 (best served sweep)",
        "held": gain >= 2,
        "from": _source(r),
    }


def speculative(results: list[Result]) -> list[dict]:
    """Speedup vs the same server without speculation, at concurrency 1 and 8; the draft's measured cost per
    token beside it, since the guide's figure assumes a draft many times cheaper than the target."""
    rows = []
    for plain, spec in _pairs(results, lambda r: r.load.options.speculative is not None):
        parts, held = [], True
        for c in (1, 8):
            before, after = _level(plain, c), _level(spec, c)
            if before is None or after is None or before.output_tok_s <= 0:
                continue
            speedup = after.output_tok_s / before.output_tok_s
            counters = after.engine_counters
            accepted = f", {100 * counters.acceptance:.0f}% accepted" if counters and counters.acceptance else ""
            parts.append(f"c{c}: {speedup:.2f}× output tok/s vs no speculation{accepted}")
            held = held and speedup >= 2
        check = spec.load.greedy_check
        if check is not None:
            parts.append(f"greedy outputs {check.identical}/{check.prompts} identical")
            held = held and check.passed
        if spec.load.options.speculative == "draft":
            parts.append(draft_cost(results, spec))
        rows.append(
            {
                "lever": f"speculative decoding ({spec.load.options.label()})",
                "measured here": "; ".join(parts),
                "held": held and bool(parts),
                "from": _source(spec),
            }
        )
    return rows


def draft_cost(results: list[Result], spec: Result) -> str:
    """ "draft N× cheaper per token": batch-1 decode tok/s of the draft over the target's, both in-process in one
    run on the sweep's host (so measured side by side, never assumed from sizes)."""
    digest = spec.load.options.draft_digest
    drafts = [r for r in results if r.load is None and r.artifact and r.artifact.digest == digest and r.speed]
    for draft in sorted(drafts, key=lambda r: r.timestamp, reverse=True):
        target = next(
            (t for t in results if t.load is None and t.run_id == draft.run_id and t.speed and t.artifact
             and t.artifact.digest == spec.artifact.digest and host(t) == host(spec)),
            None,
        )  # fmt: skip
        a, b = _decode_1(draft), _decode_1(target) if target else None
        if a and b:
            return f"draft {a / b:.1f}× cheaper per token ({a:.0f} vs {b:.0f} decode tok/s at batch 1)"
    return "draft's cost per token not measured"


def _decode_1(r: Result) -> float | None:
    point = speed_at(r, 1)
    return point.decode_tok_s.median if point else None


def kv_cache(results: list[Result]) -> list[dict]:
    f16 = {r.artifact.digest: r for r in results if _kv_type(r) == "f16" and r.load is None}
    rows = []
    for r in results:
        dtype = _kv_type(r)
        base = f16.get(r.artifact.digest)
        if r.load is not None or dtype in (None, "f16") or base is None:
            continue
        saved = 1 - r.runtime.kv_allocation.bytes_per_token / base.runtime.kv_allocation.bytes_per_token
        vs = r.quality.vs_baseline if r.quality else None
        kld = f", KLD {vs.kld_mean:.4f} vs the f16 cache" if vs else ""
        rows.append(
            {
                "lever": f"KV-cache quantization ({dtype})",
                "measured here": f"{100 * saved:.0f}% less KV memory per token than an f16 cache (llama.cpp's "
                f"allocation){kld}",
                "held": saved >= 0.5 and vs is not None and vs.kld_mean < KLD_NEGLIGIBLE,
                "from": _source(r),
            }
        )
    return rows


def _kv_type(r: Result) -> str | None:
    """The KV type an in-process record asked for (an explicit one, f16 included, shares one attention path)."""
    return r.runtime.kv_cache_dtype if r.runtime.kv_allocation is not None else None


def prefix_cache(results: list[Result]) -> list[dict]:
    served = _served(results)
    rows = []
    for on in (r for r in served if r.load.options.prefix_cache and r.load.shared_prefix_tokens):
        off = next(
            (o for o in served if not o.load.options.prefix_cache and o.load.options.kv_cache_dtype is None
             and o.load.shared_prefix_tokens and _workload(o) == _workload(on)),
            None,
        )  # fmt: skip
        if off is None:
            continue
        a, b = _level(off, 1), _level(on, 1)
        if not (a and b and a.engine_counters and b.engine_counters):
            continue
        saved = 1 - b.engine_counters.prompt_tokens_computed / a.engine_counters.prompt_tokens_computed
        ttft = a.ttft_ms.median / b.ttft_ms.median
        rows.append(
            {
                "lever": f"prefix caching ({on.load.shared_prefix_tokens}-token shared prefix)",
                "measured here": f"{100 * saved:.0f}% fewer prefill tokens computed, TTFT p50 {ttft:.1f}× lower "
                "than the same sweep with the prompt cache off (concurrency 1)",
                "held": saved >= 0.4,
                "from": _source(on),
            }
        )
    return rows


# lever → (the guide's claim, how to measure it)
CLAIMS: dict[str, tuple[str, Callable[[list[Result]], dict | list[dict] | None]]] = {
    "quantization": ("4–8× lower cost", quantization),
    "batching": ("2–5× throughput", batching),
    "speculative decoding": ("2–3× faster, 60–80% of drafts accepted, quality identical", speculative),
    "KV-cache quantization": ("50–75% less KV memory, negligible quality impact", kv_cache),
    "prefix caching": ("saves 40% of computation per request (shared 2K-token prompt)", prefix_cache),
}


def claims_table(results: list[Result]) -> pd.DataFrame:
    rows = []
    for lever, (claim, measure) in CLAIMS.items():
        found = measure(results)
        for row in [found] if isinstance(found, dict) else found or []:
            rows.append(
                {
                    "lever": row.get("lever", lever),
                    "the guide says": claim,
                    "measured here": row["measured here"],
                    "held here": "yes" if row["held"] else "no",
                    "from": row["from"],
                }
            )
    return pd.DataFrame(rows)
