"""The guide-style tradeoff table, from results only.

Each row is the newest record of one (artifact, runtime, kernel, rig, protocol) combination in the file:
re-running a bench supersedes the old numbers rather than duplicating rows; `latest_only=False` shows all.
Everything a reader needs to interpret a cell (dataset, tokens, protocol, price, formula, kernel path) is
printed under the table, because a number without its method is not comparable to anything.
"""

from __future__ import annotations

import itertools
from collections import Counter
from html import escape

import pandas as pd

from quantlab.results import KERNEL_MEANING, Result, speed_is_formats_own
from quantlab.rigs import COST_FORMULA

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


def _key(r: Result) -> tuple:
    return (
        r.artifact.digest,
        r.runtime.runtime,
        r.runtime.kernel,
        r.runtime.device,
        r.runtime.compute_dtype,
        r.rig.name,
        r.settings.token_fingerprint,
        r.settings.ctx,
        r.quality.vs_baseline.baseline_digest if r.quality and r.quality.vs_baseline else None,
    )


def select(results: list[Result], latest_only: bool = True) -> list[Result]:
    if not latest_only:
        return list(results)
    newest: dict[tuple, Result] = {}
    for result in results:
        key = _key(result)
        if key not in newest or result.timestamp >= newest[key].timestamp:
            newest[key] = result
    return sorted(
        newest.values(), key=lambda r: (r.artifact.method != "none", -r.artifact.weight_bytes, r.artifact.label)
    )


def _speed_at(result: Result, batch: int | None = None):
    if not result.speed:
        return None
    if batch is None:
        return min(result.speed, key=lambda p: p.batch_size)
    return next((p for p in result.speed if p.batch_size == batch), None)


def _fmt(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _kld(value: float) -> str:
    # Near-lossless formats sit at 1e-6…1e-4: fixed decimals would print them all as 0.
    return f"{value:.2e}" if value < 1e-3 else f"{value:.5f}"


def _own_speed(result: Result) -> bool:
    return speed_is_formats_own(result.runtime.kernel)


def _cell(result: Result) -> tuple:
    return result.artifact.digest, result.runtime.runtime, result.runtime.kernel


def _marks(results: list[Result]) -> dict[tuple, int]:
    """Footnote numbers for the cells whose speed is not the format's own, in table order.

    Every table numbers from the same list, so †2 means the same cell everywhere in one report.
    """
    numbers: dict[tuple, int] = {}
    for r in results:
        if not _own_speed(r) and _cell(r) not in numbers:
            numbers[_cell(r)] = len(numbers) + 1
    return numbers


def _kernel_mark(result: Result, marks: dict[tuple, int]) -> str:
    return "" if _own_speed(result) else f" †{marks[_cell(result)]}"


def _quality_pct(result: Result) -> float | None:
    return result.quality.recovery_pct() if result.quality else None


def main_table(results: list[Result]) -> pd.DataFrame:
    """The guide's quantization tradeoff table: format, memory, speed, $/1M and quality % of the baseline."""
    rows, marks = [], _marks(results)
    for r in results:
        if r.load is not None:
            continue  # a served run has its own table (load_table)
        point = _speed_at(r)
        cost = next((c for c in r.cost if point and c.batch_size == point.batch_size), None)
        vs = r.quality.vs_baseline if r.quality else None
        mark = _kernel_mark(r, marks)
        rows.append(
            {
                "method": r.artifact.display_label(backend=True, scheme=False),
                "scheme": r.artifact.label,
                "size on disk MB": _fmt(r.artifact.disk_bytes / 1e6, 1),
                "peak memory MB": (_fmt(r.memory.peak_bytes / 1e6, 0) + mark) if r.memory else "–",
                "prefill tok/s": (_fmt(point.prefill_tok_s.median, 0) + mark) if point else "–",
                "decode tok/s": (_fmt(point.decode_tok_s.median, 1) + mark) if point else "–",
                "% of BW limit": _fmt(r.roofline.pct_of_limit, 0)
                if r.roofline and point and point.batch_size == 1
                else "–",
                "quality %": _fmt(_quality_pct(r), 1),
                "ppl": _fmt(r.quality.ppl if r.quality else None, 3),
                "Δppl %": _fmt(vs.delta_ppl_pct if vs else None, 2),
                "KLD": _kld(vs.kld_mean) if vs else "–",
                "top-1 %": _fmt(vs.top1_agreement * 100 if vs else None, 2),
                "$/1M": (f"{cost.usd_per_1m_tokens:.3f} ({r.rig.name})" + mark) if cost else "–",
                "runtime/kernel": f"{r.runtime.runtime}/{r.runtime.kernel} {r.runtime.compute_dtype}",
            }
        )
    return pd.DataFrame(rows, columns=MAIN_COLUMNS)


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
                    "task": score.task,
                    "metric": score.metric + ("" if score.higher_is_better else " (lower is better)"),
                    "score": f"{score.value:.4f}" + (f" ± {score.stderr:.4f}" if score.stderr is not None else ""),
                    "baseline": _fmt(score.baseline, 4),
                    "recovery %": _fmt(score.recovery_pct, 1),
                    "docs": score.n_samples,
                }
            )
    return pd.DataFrame(rows)


def tasks_notes(results: list[Result]) -> list[str]:
    runs = {(r.tasks.harness, r.tasks.limit, r.tasks.num_fewshot, r.tasks.task_path) for r in results if r.tasks}
    notes = []
    for harness, limit, fewshot, path in sorted(runs, key=str):
        notes.append(
            f"Tasks: {harness} on the model quantlab's transformers runtime loaded (same weights and "
            f"kernel path as the perplexity run); {fewshot or 0}-shot"
            + (f", first {limit} documents per task" if limit else "")
            + (f", task YAMLs from {path}" if path else "")
            + "; ± is lm-eval's standard error. Recovery = score / baseline score (baseline / score for "
            "lower-is-better metrics); 100 % = no loss."
        )
    if any(s.task == "quantlab_wikitext_nextword" for r in results if r.tasks for s in r.tasks.scores):
        notes.append(
            "quantlab_wikitext_nextword: quantlab's own offline task, LAMBADA's protocol (acc = the next "
            "word is the greedy continuation; perplexity over its tokens) at 400 positions 10-30 words "
            "into WikiText-2 test lines; not a published benchmark."
        )
    return notes


def _ms(dist) -> str:
    return "–" if dist is None else f"{dist.median:,.0f} / {dist.p99:,.0f}"


def load_table(results: list[Result]) -> pd.DataFrame:
    """The guide's batching table, from served runs: one row per artifact × engine × concurrency level."""
    rows, marks = [], _marks(results)
    for r in results:
        if r.load is None:
            continue
        sweep, mark = r.load, _kernel_mark(r, marks)
        base = next((lv for lv in sweep.levels if lv.concurrency == 1), None)
        for lv in sweep.levels:
            cost = next((c for c in r.cost if c.basis == "served" and c.batch_size == lv.concurrency), None)
            gain = f"{lv.total_tok_s / base.total_tok_s:.1f}×" if base and base.total_tok_s > 0 else "–"
            rows.append(
                {
                    "method": r.artifact.display_label(backend=True, scheme=False),
                    "scheme": r.artifact.label,
                    "engine": f"{sweep.engine}{'' if sweep.batches else ' (not batched)'}"
                    f"{'' if sweep.engine_verified else ' (unverified)'}",
                    "concurrency": lv.concurrency,
                    "ok/errors": f"{lv.completed}/{lv.errors}",
                    "total tok/s": _fmt(lv.total_tok_s, 1) + mark,
                    "output tok/s": _fmt(lv.output_tok_s, 1) + mark,
                    "vs c=1": gain,
                    "req/s": _fmt(lv.requests_per_s, 2),
                    "TTFT ms p50/p99": _ms(lv.ttft_ms),
                    "TPOT ms p50/p99": _ms(lv.tpot_ms),
                    "ITL ms p50/p99": _ms(lv.itl_ms),
                    "$/1M out": (f"{cost.usd_per_1m_tokens:.3f} ({r.rig.name})" + mark) if cost else "–",
                }
            )
    return pd.DataFrame(rows)


def load_notes(results: list[Result]) -> list[str]:
    served = [r for r in results if r.load is not None]
    notes = []
    protocols = {(r.load.prompt_tokens, r.load.output_tokens, r.load.prompts) for r in served}
    for prompt, output, prompts in sorted(protocols):
        notes.append(
            f"Served load: each request streams a completion of a {prompt}-token prompt with exactly "
            f"{output} output tokens (EOS suppressed, greedy); prompts: {prompts}. Each level sends its "
            "requests as fast as the concurrency cap allows (closed loop) unless a request rate is "
            "set; one untimed warm-up request first. TTFT = send → first streamed token; TPOT = (end "
            "− first token) / (output tokens − 1); ITL = gap between streamed chunks; total tok/s "
            "counts prompt + output tokens over the level's wall time; 'vs c=1' compares total tok/s "
            "with concurrency 1."
        )
    engines = {(r.load.engine, r.load.engine_version, r.load.batching) for r in served}
    notes += [f"Engine {name} {version}: {how}." for name, version, how in sorted(engines)]
    for r in served:
        fit = r.load.memfit
        if fit is not None and r.memory is not None:
            notes.append(
                f"Memory, {r.artifact.method} {r.artifact.label} served by {r.load.engine}: measured "
                f"peak {r.memory.peak_bytes / 1e6:,.0f} MB ({r.memory.kind}); the memory-fit "
                f"arithmetic for batch {fit.batch} × ctx {fit.ctx}: weights {fit.weight_bytes / 1e6:,.0f} "
                f"MB + KV {fit.kv_bytes / 1e6:,.1f} MB = {fit.needed_bytes / 1e6:,.0f} MB; the rest is "
                "the engine's runtime, activations and buffers."
            )
    rigs = {(r.rig.name, r.rig.price_per_hour, r.rig.price_note) for r in served if r.cost}
    for name, price, note in sorted(rigs):
        notes.append(
            f"Served cost: {COST_FORMULA}, from output tok/s at each concurrency level (cost falls as "
            f"batching raises throughput); rig {name} at ${price}/h ({note})."
        )
    return notes


def batch_table(results: list[Result]) -> pd.DataFrame:
    rows, marks = [], _marks(results)
    for r in results:
        for p in r.speed:
            cost = next((c for c in r.cost if c.batch_size == p.batch_size), None)
            mark = _kernel_mark(r, marks)
            rows.append(
                {
                    "method": r.artifact.display_label(backend=True, scheme=False),
                    "scheme": r.artifact.label,
                    "batch": p.batch_size,
                    "prefill tok/s": f"{p.prefill_tok_s.median:,.0f} [{p.prefill_tok_s.min:,.0f}–"
                    f"{p.prefill_tok_s.max:,.0f}]{mark}",
                    "decode tok/s": f"{p.decode_tok_s.median:,.1f} [{p.decode_tok_s.min:,.1f}–"
                    f"{p.decode_tok_s.max:,.1f}]{mark}",
                    "TTFT ms": _fmt(p.ttft_ms.median, 1),
                    "TPOT ms": _fmt(p.tpot_ms.median, 1),
                    "$/1M": (f"{cost.usd_per_1m_tokens:.3f}" + mark) if cost else "–",
                }
            )
    return pd.DataFrame(rows)


def _range(values: list[float], digits: int, suffix: str = "") -> str:
    if not values:
        return "–"
    low, high = min(values), max(values)
    if f"{low:,.{digits}f}" == f"{high:,.{digits}f}":
        return f"{low:,.{digits}f}{suffix}"
    return f"{low:,.{digits}f}–{high:,.{digits}f}{suffix}"


def _comparable(results: list[Result]) -> list[Result]:
    """The in-process records scored against one baseline on one rig with one token stream: the largest such
    group, because rows measured against different references or on different rigs do not rank."""
    scored = [r for r in results if r.load is None and r.quality and r.quality.vs_baseline]
    groups: dict[tuple, list[Result]] = {}
    for r in scored:
        groups.setdefault(
            (r.quality.vs_baseline.baseline_digest, r.rig.name, r.settings.token_fingerprint, r.settings.ctx), []
        ).append(r)
    return max(groups.values(), key=len) if groups else []


def _wins(group: list[Result], served: list[Result]) -> dict[str, list[str]]:
    """What each cell is measurably best at among its comparable cells; only the format's own speed competes."""
    wins: dict[str, list[str]] = {}

    def award(r: Result, what: str) -> None:
        wins.setdefault(r.artifact.digest, []).append(what)

    baseline = group[0].quality.vs_baseline.baseline_digest
    others = [r for r in group if r.artifact.digest != baseline]
    if others:
        award(max(others, key=_quality_pct), "highest quality")
    award(min(group, key=lambda r: r.artifact.disk_bytes), "smallest file")
    measured = [r for r in group if r.memory and _own_speed(r)]  # a † cell's memory is its kernel path's
    if measured:
        award(min(measured, key=lambda r: r.memory.peak_bytes), "least memory")
    own = [r for r in group if _own_speed(r) and r.speed]
    at_one = [r for r in own if _speed_at(r, 1)]
    if at_one:
        award(max(at_one, key=lambda r: _speed_at(r, 1).decode_tok_s.median), "fastest batch-1 decode, lowest $/1M")
        largest = max(p.batch_size for r in own for p in r.speed)
        at_largest = [r for r in own if _speed_at(r, largest)]
        if largest > 1 and at_largest:
            award(
                max(at_largest, key=lambda r: _speed_at(r, largest).decode_tok_s.median),
                f"fastest decode at batch {largest}",
            )
    if served:
        top = max(lv.concurrency for r in served for lv in r.load.levels)
        at_top = [r for r in served if any(lv.concurrency == top for lv in r.load.levels)]
        best = max(at_top, key=lambda r: next(lv.total_tok_s for lv in r.load.levels if lv.concurrency == top))
        award(best, f"most served tok/s at {top} concurrent requests ({best.load.engine})")
    frontier = set(_size_quality_frontier(group))
    for r in others:
        if r.artifact.digest not in wins and (r.artifact.disk_bytes, -_quality_pct(r)) in frontier:
            award(r, "best quality at its size (on the size/quality frontier)")
    return wins


def _size_quality_frontier(group: list[Result]) -> list[tuple[int, float]]:
    from quantlab.report.plots import pareto

    return pareto([(r.artifact.disk_bytes, -_quality_pct(r)) for r in group])


def choose_table(results: list[Result]) -> pd.DataFrame:
    """A measured "which format to choose" table: per method, its quality, speed and memory range relative to
    the baseline, and what its cells are best at here — derived from the numbers, so it can say "nothing"."""
    group = _comparable(results)
    if len(group) < 2:
        return pd.DataFrame()
    baseline_digest = group[0].quality.vs_baseline.baseline_digest
    base = next((r for r in group if r.artifact.digest == baseline_digest), None)
    base_speed = _speed_at(base, 1).decode_tok_s.median if base and _speed_at(base, 1) else None
    base_memory = base.memory.peak_bytes if base and base.memory else None
    served = [
        r
        for r in results
        if r.load is not None
        and r.load.levels
        and r.rig.name == group[0].rig.name
        and _own_speed(r)
        and r.artifact.digest in {g.artifact.digest for g in group}
    ]
    wins, marks = _wins(group, served), _marks(results)
    methods: dict[str, list[Result]] = {}
    for r in group:
        methods.setdefault(r.artifact.display_label(backend=True, scheme=False), []).append(r)
    rows = []
    for method, cells in methods.items():
        speeds = [(r, _speed_at(r, 1).decode_tok_s.median) for r in cells if _speed_at(r, 1)]
        cell_marks = sorted({marks[_cell(r)] for r in cells if not _own_speed(r)})
        mark = f" †{','.join(map(str, cell_marks))}" if cell_marks else ""
        reference = ["the reference (100 % by definition)"]
        best_for = [
            f"{r.artifact.label}: " + ", ".join((reference if r is base else []) + wins.get(r.artifact.digest, []))
            for r in cells
            if r is base or r.artifact.digest in wins
        ]
        if not best_for:
            best_for = [_dominated(cells, group)]
        rows.append(
            {
                "method": method,
                "schemes": ", ".join(r.artifact.label for r in cells),
                "quality %": _range([_quality_pct(r) for r in cells], 1),
                "decode tok/s, batch 1": (_range([v for _, v in speeds], 1) + mark) if speeds else "–",
                "speed vs baseline": (_range([v / base_speed for _, v in speeds], 2, "×") + mark)
                if speeds and base_speed
                else "–",
                "memory vs baseline": (
                    _range([r.memory.peak_bytes / base_memory for r in cells if r.memory], 2, "×") + mark
                )
                if base_memory and any(r.memory for r in cells)
                else "–",
                "best for (measured here)": "; ".join(best_for),
            }
        )
    return pd.DataFrame(rows)


def _dominated(cells: list[Result], group: list[Result]) -> str:
    """Why a method wins nothing: the cell that beats its best cell on size and quality (and speed, if known)."""
    best = max(cells, key=_quality_pct)
    rivals = [
        r
        for r in group
        if r.artifact.digest != best.artifact.digest
        and r.artifact.disk_bytes <= best.artifact.disk_bytes
        and _quality_pct(r) >= _quality_pct(best)
    ]
    if not rivals:
        return "nothing singled out here"
    rival = max(rivals, key=_quality_pct)
    faster = (
        _speed_at(rival, 1)
        and _speed_at(best, 1)
        and _own_speed(rival)
        and _speed_at(rival, 1).decode_tok_s.median >= _speed_at(best, 1).decode_tok_s.median
    )
    return (
        f"nothing here: {rival.artifact.display_label(backend=True)} is smaller with higher quality"
        + (" and decodes faster at batch 1" if faster else "")
        + f" than {best.artifact.label}"
    )


def choose_notes(results: list[Result]) -> list[str]:
    group = _comparable(results)
    if len(group) < 2:
        return []
    return [
        "Which format to choose: derived from the rows above on rig "
        f"{group[0].rig.name}, against the baseline {group[0].quality.vs_baseline.baseline_label}. Ranges span "
        "each method's schemes. 'Best for' names what a scheme is measurably best at among these cells "
        "(highest quality, smallest file, least peak memory, fastest decode at batch 1 and at the largest "
        "batch, most served throughput at the highest concurrency); a scheme that wins none but no other is "
        "both smaller and better is marked as on the size/quality frontier. Only cells whose speed and "
        "memory are the format's own (kernel dense or native) compete on speed and memory: a †-marked "
        "cell's are its kernel path's. A different model, rig or runtime can change every entry; re-run the "
        "recipe there."
    ]


def _types(r: Result) -> str:
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
                "scheme": r.artifact.label,
                "bits/weight": f"{g.bits_per_weight:.2f}",
                "tensor types written": _types(r),
                "fallbacks": len(g.fallbacks),
                "imatrix": "yes" if g.imatrix else "no",
                "KLD": _kld(vs.kld_mean) if vs else "–",
            }
        )
    return pd.DataFrame(rows)


def gguf_ordering_notes(results: list[Result]) -> list[str]:
    """Neighbours (by file size) where the smaller GGUF is *not* the worse one, with what each really holds.

    Quality is expected to fall with size; where it does not, the reason is in the tensor types written
    (fallbacks to other block types, tensors the recipe keeps at higher precision), so both censuses are shown.
    """
    ggufs = [
        r
        for r in results
        if r.artifact.gguf and r.quality and r.quality.vs_baseline and r.artifact.gguf.imatrix is None
    ]
    ggufs.sort(key=lambda r: -r.artifact.disk_bytes)
    notes = []
    for big, small in itertools.pairwise(ggufs):
        k_big, k_small = big.quality.vs_baseline.kld_mean, small.quality.vs_baseline.kld_mean
        if k_small >= k_big:
            continue
        fb = small.artifact.gguf.fallbacks
        t_big, t_small = Counter(big.artifact.gguf.tensor_types), Counter(small.artifact.gguf.tensor_types)
        only_big = ", ".join(f"{t}×{n}" for t, n in (t_big - t_small).items())
        only_small = ", ".join(f"{t}×{n}" for t, n in (t_small - t_big).items())
        notes.append(
            f"GGUF ordering broken: {small.artifact.label} ({small.artifact.gguf.bits_per_weight:.2f} bpw) has a lower "
            f"KLD ({k_small:.5f}) than the larger {big.artifact.label} ({big.artifact.gguf.bits_per_weight:.2f} bpw, "
            f"{k_big:.5f}). The files differ only in {only_big} ({big.artifact.label}) versus {only_small} "
            f"({small.artifact.label}); the comparison is between those tensor types, not between the type names. "
            f"Written: {big.artifact.label}: {_types(big)}; {small.artifact.label}: {_types(small)}"
            + (f"; {len(fb)} of its tensors fell back ({fb[0]}, ...)" if fb else "")
            + "."
        )
    return notes


def footnotes(results: list[Result]) -> list[str]:
    notes = []
    baselines = {
        (r.quality.vs_baseline.baseline_label, r.quality.vs_baseline.baseline_digest)
        for r in results
        if r.quality and r.quality.vs_baseline
    }
    for label, digest in sorted(baselines):
        notes.append(
            f"quality % = 100 × baseline ppl / ppl (perplexity recovery, the guide's \"quality % of "
            f'FP16"), against the baseline {label} (artifact {digest}); 100 % = no loss. Δppl, KLD and '
            "top-1 are against the same baseline on the same windows."
        )
    settings = {
        (r.settings.dataset.description, r.settings.n_tokens, r.settings.token_fingerprint, r.settings.ctx)
        for r in results
        if r.quality
    }
    for description, n_tokens, fingerprint, ctx in sorted(settings):
        quality = next(
            r.quality
            for r in results
            if r.quality and r.settings.token_fingerprint == fingerprint and r.settings.ctx == ctx
        )
        notes.append(
            f"Quality: {description}; {n_tokens} tokens (fingerprint {fingerprint}), ctx {ctx}, "
            f"{quality.tokens_scored} tokens scored. Protocol: {quality.protocol}."
        )
    speed = {
        (r.settings.prompt_tokens, r.settings.new_tokens, r.settings.warmup, r.settings.repeats)
        for r in results
        if r.speed
    }
    for prompt, new, warmup, repeats in sorted(speed):
        notes.append(
            f"Speed: prompts of {prompt} tokens, {new} new tokens (greedy, fixed length), {warmup} "
            f"warm-up, median of {repeats} repeats; the main table shows the smallest batch size. "
            "Decode tok/s counts all sequences of a batch."
        )
    kinds = {r.memory.note for r in results if r.memory}
    notes += [f"Memory: {kind}." for kind in sorted(kinds)]
    sources = {r.artifact.source_description for r in results if r.artifact.source_description}
    notes += [f"Model: {desc}." for desc in sorted(sources)]
    rigs = {
        (r.rig.name, r.rig.description, r.rig.price_per_hour, r.rig.price_note, r.host.cpu, r.host.cpu_count)
        for r in results
        if r.cost and r.load is None
    }
    for name, description, price, note, cpu, cores in sorted(rigs):
        where = f"{cpu}, {cores} cores" if name == "cpu" else description
        notes.append(f"Cost: {COST_FORMULA}, from median decode tok/s; rig {name} ({where}) at ${price}/h ({note}).")
    bandwidths = {
        (r.runtime.device_name, r.roofline.bandwidth_gb_s, r.roofline.bandwidth_method) for r in results if r.roofline
    }
    for device_name, gb_s, method in sorted(bandwidths):
        notes.append(
            f"% of BW limit: batch-1 decode tok/s ÷ (memory bandwidth ÷ bytes read per decoded token); "
            f"bandwidth {gb_s} GB/s on {device_name}, measured by quantlab ({method}); bytes per token "
            "= weights as the kernel path holds them in memory + KV cache at the mean decode context:"
        )
    notes += [f"  {r.artifact.display_label(backend=True)}: {r.roofline.bytes_detail}" for r in results if r.roofline]
    batching = {(r.runtime.runtime, r.runtime.batching) for r in results if r.speed}
    notes += [f"Batching in {name}: {how}." for name, how in sorted(batching)]
    notes += gguf_ordering_notes(results)
    notes += load_notes(results)
    notes += tasks_notes(results)
    notes += choose_notes(results)
    kernels = {r.runtime.kernel for r in results}
    notes += [f"Kernel '{kernel}': {KERNEL_MEANING[kernel]}." for kernel in sorted(kernels)]
    details = {
        (r.artifact.display_label(backend=True), r.runtime.kernel_detail)
        for r in results
        if r.runtime.kernel == "native"
    }
    notes += [f"  {name}: {detail}" for name, detail in sorted(details)]
    notes += emulated_notes(results)
    return notes


def emulated_notes(results: list[Result]) -> list[str]:
    """One footnote per cell whose speed (and so $/1M) is not the format's own: what ran, and what it means."""
    by_cell = {_cell(r): r for r in results}
    return [
        f"†{n} {r.artifact.display_label(backend=True)} on {r.runtime.runtime}, kernel "
        f"'{r.runtime.kernel}' ({r.runtime.compute_dtype}): {r.runtime.kernel_detail}. Its size and quality are "
        f"the format's; its speed, memory and $/1M are those of this kernel path, not of the format on hardware "
        "or a library that computes on it natively."
        for key, n in _marks(results).items()
        for r in [by_cell[key]]
    ]


def sections(results: list[Result]) -> list[tuple[str | None, pd.DataFrame]]:
    """The report's tables in order, each built once, empty ones left out; the main table has no heading."""
    tables = [
        (None, main_table(results)),
        ("Which format to choose (measured)", choose_table(results)),
        ("Throughput by batch size", batch_table(results)),
        ("Task accuracy (lm-eval) and recovery", tasks_table(results)),
        ("Served under load (batching)", load_table(results)),
        ("GGUF: tensor types as written", gguf_table(results)),
    ]
    return [(heading, table) for heading, table in tables if not table.empty]


def markdown(results: list[Result], *, title: str = "quantlab results") -> str:
    lines = [f"# {title}", ""]
    for heading, table in sections(results):
        lines += ([] if heading is None else [f"## {heading}", ""]) + [table.to_markdown(index=False), ""]
    lines += ["## How these numbers were made", ""]
    lines += [f"- {note}" for note in footnotes(results)]
    versions = sorted({f"{k} {v}" for r in results for k, v in r.libraries.items()})
    lines += [f"- Libraries: {', '.join(versions)}.", ""]
    return "\n".join(lines)


def csv(results: list[Result]) -> str:
    return main_table(results).to_csv(index=False)


def html(results: list[Result], *, title: str = "quantlab results") -> str:
    notes = "".join(f"<li>{escape(n)}</li>" for n in footnotes(results))
    body = "".join(
        ("" if heading is None else f"<h2>{escape(heading)}</h2>") + table.to_html(index=False)
        for heading, table in sections(results)
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}</style></head><body>"
        f"<h1>{escape(title)}</h1>{body}"
        + _plots_html(results)
        + f"<h2>How these numbers were made</h2><ul>{notes}</ul></body></html>\n"
    )


def _plots_html(results: list[Result]) -> str:
    import base64

    from quantlab.report import plots

    images = plots.render_all(results)
    if not images:
        return ""
    return "<h2>Plots</h2>" + "".join(
        f"<figure><img alt='{escape(name)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
        f"<figcaption>{escape(name)}</figcaption></figure>"
        for name, png in images.items()
    )


FORMATS = {"md": markdown, "csv": csv, "html": html}
