"""Everything printed under the tables: how each number was made.

A number without its method is not comparable to anything, so the dataset, token counts, protocol, price,
formula and kernel path of every row are stated here, derived from the same records as the rows; each note is
printed once per distinct setting, so a report mixing settings says so instead of implying one.
"""

from __future__ import annotations

import itertools
from collections import Counter

from quantlab.report.quality_detail import quality_detail_notes
from quantlab.report.selection import comparable, host, select, spans_hosts, subject, with_artifact
from quantlab.report.tables import cell_key, mark_numbers, tensor_types
from quantlab.results import KERNEL_MEANING, UNKNOWN, Result
from quantlab.rigs import COST_FORMULA


def footnotes(results: list[Result]) -> list[str]:
    """Every note of a report, in the order the report prints them. An external server's record has no artifact:
    it has the served notes and its own (`external_notes`), none of the artifacts' notes."""
    served, results = results, with_artifact(results)
    notes = _quality_notes(results) + quality_detail_notes(results) + _speed_notes(results)
    notes += [f"Memory: {kind}." for kind in sorted({r.memory.note for r in results if r.memory})]
    sources = {r.artifact.source_description for r in results if r.artifact.source_description}
    notes += [f"Model: {desc}." for desc in sorted(sources)]
    notes += _cost_notes(results) + _roofline_notes(results)
    batching = {(r.runtime.runtime, r.runtime.batching) for r in results if r.speed}
    notes += [f"Batching in {name}: {how}." for name, how in sorted(batching)]
    notes += _decode_notes(results)
    notes += gguf_ordering_notes(results)
    notes += load_notes(served) + external_notes(served)
    notes += tasks_notes(results)
    notes += choose_notes(results)
    notes += _kernel_notes(results)
    notes += emulated_notes(results)
    return notes


def _quality_notes(results: list[Result]) -> list[str]:
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
    return notes


def _speed_notes(results: list[Result]) -> list[str]:
    notes = []
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
    return notes


def _parting(gap: float | None) -> str:
    if gap is None:
        return ""
    if gap == 0:
        return " (where they part, the eager loop's top two logits were exactly tied: argmax broke the tie)"
    return f" (where they part, the eager loop's top-2 logit gap was at most {gap:.3g})"


def op_name(op: str) -> str:
    """torch.profiler names a compiled graph's call after its cache hash; a reader needs to know it is one."""
    return "compiled graph (inductor's own kernels)" if op.startswith("## Call CompiledFxGraph") else op


def _decode_notes(results: list[Result]) -> list[str]:
    """Which decode loop made the speed figures, where a record says (records made before the compiled loop
    existed do not); of the newest record of each configuration, as the tables show."""
    notes = set()
    for r in select(results):
        decode = r.runtime.decode
        if not r.speed or decode is None:
            continue
        if decode.fallback:
            notes.add(
                f"Decode loop of {r.artifact.display_label(backend=True)}: compiled asked, eager ran "
                f"({decode.fallback})."
            )
        elif decode.mode == "compiled":
            notes.add(
                f"Decode loop of {r.artifact.display_label(backend=True)} ({r.runtime.runtime}, compiled): "
                f"{decode.detail}; compilation untimed ({decode.compile_s:.0f} s); greedy output identical to eager "
                f"decoding over the same static cache for {decode.eager_check_identical} of "
                f"{decode.eager_check_sequences} sequences, to the eager loop's (DynamicCache) for "
                f"{decode.eager_check_identical_dynamic}" + _parting(decode.eager_check_divergence_margin) + "."
            )
        else:
            notes.add(f"Decode loop ({r.runtime.runtime}, eager): {decode.detail}.")
        if decode.profile:
            top = ", ".join(f"{op_name(o.op)} {o.share:.0%}" for o in decode.profile[:4])
            loop = "compiled" if decode.mode == "compiled" else "eager"
            notes.add(
                f"Where the decode time goes, {r.artifact.display_label(backend=True)} ({loop}): {top} "
                f"({decode.profile_detail})."
            )
    return sorted(notes)


def _cost_notes(results: list[Result]) -> list[str]:
    notes = []
    rigs = {
        (r.rig.name, r.rig.description, r.rig.price_per_hour, r.rig.price_note, r.host.cpu, r.host.cpu_count)
        for r in results
        if r.cost and r.load is None
    }
    for name, description, price, note, cpu, cores in sorted(rigs):
        where = f"{cpu}, {cores} cores" if name == "cpu" else description
        notes.append(f"Cost: {COST_FORMULA}, from median decode tok/s; rig {name} ({where}) at ${price}/h ({note}).")
    return notes


def _roofline_notes(results: list[Result]) -> list[str]:
    notes = []
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
    return notes


def _kernel_notes(results: list[Result]) -> list[str]:
    kernels = {r.runtime.kernel for r in results}
    notes = [f"Kernel '{kernel}': {KERNEL_MEANING[kernel]}." for kernel in sorted(kernels)]
    details = {
        (r.artifact.display_label(backend=True), r.runtime.kernel_detail)
        for r in results
        if r.runtime.kernel == "native"
    }
    notes += [f"  {name}: {detail}" for name, detail in sorted(details)]
    return notes


def emulated_notes(results: list[Result]) -> list[str]:
    """One footnote per cell whose speed (and so $/1M) is not the format's own: what ran, and what it means."""
    by_cell = {cell_key(r): r for r in results}
    multi = spans_hosts(results)  # then the same cell on two hosts is two footnotes: say which is which
    return [
        f"†{n} {r.artifact.display_label(backend=True)} on {r.runtime.runtime}"
        f"{f' ({host(r)})' if multi else ''}, kernel "
        f"'{r.runtime.kernel}' ({r.runtime.compute_dtype}): {r.runtime.kernel_detail}. Its size and quality are "
        f"the format's; its speed, memory and $/1M are those of this kernel path, not of the format on hardware "
        "or a library that computes on it natively."
        for key, n in mark_numbers(results).items()
        for r in [by_cell[key]]
    ]


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
            f"Written: {big.artifact.label}: {tensor_types(big)}; {small.artifact.label}: {tensor_types(small)}"
            + (f"; {len(fb)} of its tensors fell back ({fb[0]}, ...)" if fb else "")
            + "."
        )
    return notes


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
    engines = {(r.load.engine, r.load.engine_version, r.load.batching, _ran_by(r.load)) for r in served}
    notes += [f"Engine {name} {version}{ran_by}: {how}." for name, version, how, ran_by in sorted(engines)]
    for r in served:
        fit = r.load.memfit
        if fit is not None and r.memory is not None:
            notes.append(
                f"Memory, {subject(r, backend=False)} served by {r.load.engine}: measured "
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


def _ran_by(sweep) -> str:
    """Said only when another interpreter than quantlab's own ran the engine (vLLM in a virtualenv of its own):
    the default says nothing, so reports of records that predate the field read as they did."""
    python = sweep.engine_python
    return "" if python is None or python.own else f" (run by {python.path}, not quantlab's own Python)"


def external_notes(results: list[Result]) -> list[str]:
    """What an external server's row rests on: what it said of itself, and what quantlab does not know."""
    notes = []
    for r in results:
        if r.target is None:
            continue
        t = r.target
        props = t.props.model_dump() if t.props else UNKNOWN
        named = f"; artifact {t.named_artifact.label} ({t.named_artifact.digest[:12]}) {t.named_artifact.note}" \
            if t.named_artifact else ""  # fmt: skip
        notes.append(
            f"{t.label()}: a server quantlab did not start, measured with the same load generator and definitions; "
            f"no artifact, so no digest, quality or kernel path, and its hardware is unknown. /v1/models: "
            f"{', '.join(t.model_ids) if t.model_ids else UNKNOWN}; /props: {props} ({'; '.join(t.probes)}); every "
            f"request added {t.request_fields}{named}."
        )
    return notes


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


def choose_notes(results: list[Result]) -> list[str]:
    group = comparable(results)
    if len(group) < 2:
        return []
    # Named only when the report spans hosts, so a single-host report reads as it always did.
    one_host = (
        f", host {host(group[0])} only (the host with the most comparable rows: speed, memory and price "
        "measured on different machines do not rank against each other)"
        if spans_hosts(results)
        else ""
    )
    return [
        f"Which format to choose: derived from the rows above on rig {group[0].rig.name}{one_host}, against the "
        f"baseline {group[0].quality.vs_baseline.baseline_label}. Ranges span each method's schemes. 'Best for' "
        "names what a scheme is measurably best at among these cells (highest quality, smallest file, least peak "
        "memory, fastest decode at batch 1 and at the largest batch, most served throughput at the highest "
        "concurrency); a scheme that wins none but no other is both smaller and better is marked as on the "
        "size/quality frontier. Only cells whose speed and memory are the format's own (kernel dense or native) "
        "compete on speed and memory: a †-marked cell's are its kernel path's. A different model, rig or runtime "
        "can change every entry; re-run the recipe there."
    ]
