"""The scale probe's verdicts and report (`benchmarks/crosschecks/scale_probe.py` measures; this reads its
records): which target each step has and whether it was met, the table, the peak RSS by phase, the steps not
measured, and the rendered `.md`."""

from __future__ import annotations

import re

from benchmarks.lib.records import BenchRecord

GB = 1e9
CELLS = ("rtn", "gptq", "awq", "gguf", "bnb")
QUANTIZE = ("none", *CELLS)
CALIBRATED_LIMIT = 1.5  # × the bf16 weight bytes
BENCH_ALLOWANCE = 1 * GB  # over the cell's own load footprint
PATH = re.compile(r"[^ `]*/[^ `]*/[^ `]*")  # a path in a progress line, shown as <path>


def verdicts(records: list[BenchRecord], tolerance: float) -> list[tuple[BenchRecord, str, bool | None]]:
    """Each record with its target and whether it was met (None: reported only)."""
    by = {(r.measurement["model"], r.measurement["step"], r.measurement["cell"]): r.measurement for r in records}
    out = []
    for record in records:
        m = record.measurement
        target, ok = "", None
        if m["returncode"] != 0:
            target, ok = "runs to its end", False
        elif m["step"] == "quantize" and m["cell"] in ("gptq", "awq") and m["rss_over_bf16"] is not None:
            target, ok = f"≤ {CALIBRATED_LIMIT} × bf16", m["rss_over_bf16"] <= CALIBRATED_LIMIT
        elif m["step"] == "bench" and m["load_footprint_bytes"]:
            limit = m["load_footprint_bytes"] + BENCH_ALLOWANCE
            target, ok = f"≤ load + {BENCH_ALLOWANCE / GB:.0f} GB = {limit / GB:.2f}", m["peak_rss_bytes"] <= limit
        elif m["step"] == "reference" and (score := by.get((m["model"], "score-baseline", "none"))):
            wall, rss = score["wall_s"] * (1 + tolerance), score["peak_rss_bytes"] * (1 + tolerance)
            target = f"≤ scoring once (+{tolerance:.0%}): {wall:.0f} s, {rss / GB:.2f} GB"
            ok = m["wall_s"] <= wall and m["peak_rss_bytes"] <= rss
        out.append((record, target, ok))
    return out


def gb(value: int | None) -> str:
    return f"{value / GB:.2f}" if value else "—"


def table(rows: list[tuple[BenchRecord, str, bool | None]]) -> list[str]:
    lines = [
        "| step | model | cell | wall s | peak RSS GB | RSS / bf16 | load footprint GB | load avg before → after "
        "| target | verdict |",
        "|---|---|---|---:|---:|---:|---:|---|---|---|",
    ]
    for record, target, ok in rows:
        m = record.measurement
        ratio = f"{m['rss_over_bf16']:.2f}×" if m["rss_over_bf16"] else "—"
        load = f"{m['loadavg_before'][0]:.2f} → {m['loadavg_after'][0]:.2f}"
        verdict = "INFO" if ok is None else "PASS" if ok else "FAIL"
        lines.append(
            f"| {m['step']} | {m['model']} | {m['cell']} | {m['wall_s']:.1f} | {gb(m['peak_rss_bytes'])} | {ratio} "
            f"| {gb(m['load_footprint_bytes'])} | {load} | {target} | {verdict} |"
        )
    return lines


def profiles(rows: list[tuple[BenchRecord, str, bool | None]]) -> list[str]:
    """Where the memory went in each step with a target: the largest RSS sampled in each phase of its output."""
    lines = []
    for record, target, ok in rows:
        m = record.measurement
        if not target:
            continue
        lines.append(f"- {m['step']} {m['cell']} ({m['model']}, {'PASS' if ok else 'FAIL'}), peak RSS by phase:")
        lines += [f"  - {gb(peak)} GB: `{PATH.sub('<path>', phase)}`" for phase, peak in m["phases"]]
    return lines


def latest(records: list[BenchRecord]) -> list[BenchRecord]:
    """The newest record of each (model, step, cell), in the order the steps run: a step run again (after a fix,
    or a run that stopped half-way resumed with --steps) replaces its earlier measurement; the .md names every
    run that contributed."""
    newest: dict[tuple[str, str, str], BenchRecord] = {}
    for record in sorted(records, key=lambda r: r.timestamp):
        m = record.measurement
        newest[(m["model"], m["step"], m["cell"])] = record
    order = {"quantize": 0, "reference": 1, "score-baseline": 2, "load": 3, "bench": 4}
    cells = {c: i for i, c in enumerate(QUANTIZE)}
    return sorted(
        newest.values(),
        key=lambda r: (r.measurement["model"] != "1b", order[r.measurement["step"]], cells[r.measurement["cell"]]),
    )


def render(records: list[BenchRecord], tolerance: float, reason: str = "") -> str:
    run = records[-1]
    rows = verdicts(records, tolerance)
    host, s = run.host, run.settings
    runs = {r.run_id: r for r in records}
    made = [
        f"- run {r.run_id} ({r.timestamp}, quantlab {r.quantlab_version}): `{r.settings['command']}`, steps "
        f"{', '.join(sorted({_key(x.measurement) for x in records if x.run_id == r.run_id}))}"
        for r in sorted(runs.values(), key=lambda r: r.timestamp)
    ]
    loads = [x for r in records for x in (r.measurement["loadavg_before"], r.measurement["loadavg_after"])]
    lines = [
        "# The scale probe: quantlab's own memory and time against the model's size",
        "",
        "Made by (the newest measurement of each step is kept):",
        "",
        *made,
        "",
        f"Host: {s['cpu_model']}, {host.cpu_count} cores, {host.memory_bytes / 2**30:.1f} GiB RAM, no GPU, shared "
        "with other sessions: wall times are perturbed by their load. 1-minute load averages around the steps "
        f"ranged {min(x[0] for x in loads):.2f}–{max(x[0] for x in loads):.2f} (per step in the table).",
        f"Libraries: {', '.join(f'{k} {v}' for k, v in run.tools.items())}.",
        "",
        "Each step is a fresh child process of the `quantlab` CLI; peak RSS is the kernel's `ru_maxrss` for it (the",
        "largest of the child and each process it waited for); RSS / bf16 divides it by the bf16 baseline's weight",
        "bytes of the same model. GB = 10⁹ bytes. Settings: " + ", ".join(f"{k} `{v}`" for k, v in s["steps"].items()),
        "",
        *table(rows),
        "",
        "## Where the memory goes",
        "",
        "Per step with a target: the largest RSS sampled (every 0.25 s, the child or any one of its descendants) "
        "from each line of its output to the next, numbers in the lines folded to N. quantlab prints a window's "
        "line once it is scored, so the first window falls under the line before it.",
        "",
        *profiles(rows),
    ]
    missed = {k for r, _, ok in rows if ok is False for k in (r.measurement["step"], _key(r.measurement))}
    notes = [f"- {text}" for keys, text in NOTES.items() if missed.intersection(keys)]
    if notes:
        lines += ["", "## Missed targets: why, and what would fix them", "", *notes]
    absent = missing(records)
    if absent:
        lines += ["", "## Not measured", "", f"{', '.join(absent)}: {reason or 'not run'}."]
    return "\n".join(lines) + "\n"


def missing(records: list[BenchRecord]) -> list[str]:
    """The steps a full run of each model has that these records lack (a run stopped, or steps left out)."""
    have = {(r.measurement["model"], _key(r.measurement)) for r in records}
    out = []
    for model in sorted({m for m, _ in have}, key=lambda m: m != "1b"):
        made = [c for c in QUANTIZE if (model, f"quantize {c}") in have]
        wanted = [f"quantize {c}" for c in QUANTIZE] + ["reference none", "score-baseline none"]
        wanted += [f"load {c}" for c in made] + [f"bench {c}" for c in made if c != "none"]
        out += [f"{step} ({model})" for step in wanted if (model, step) not in have]
    return out


def _key(m: dict) -> str:
    return f"{m['step']} {m['cell']}"


# Why a missed target was missed and what would fix it, shown in the .md under the targets missed. The figures here
# come from diagnostic runs on this host (an in-process RSS sampler around the named library calls, 5 ms apart),
# not from the records above; the profile above each note holds the run's own.
_CALIBRATED = (
    "on the default model the target cannot hold: the libraries alone (the `quantize none` row) are over 3× its "
    "0.27 GB of bf16 weights. On the 1B model: quantlab passes `oneshot` the recipe alone, so llm-compressor's "
    "`independent` pipeline runs GPTQModifier and "
    "AWQModifier through its `sequential` pipeline. That onloads one decoder layer at a time to the execution "
    "device, which on a CPU is where the whole model already sits: it bounds accelerator memory and saves no host "
    "memory. GPTQ's peak on the 1B model, profiled per llm-compressor call: the libraries (~0.85 GB); every bf16 "
    "weight (2.47 GB; read in place from the checkpoint's mapping, the decoder layers as calibration reaches them "
    "and the tied 0.5 GB embedding once llm-compressor's save_pretrained wrapper reads it, before transformers' "
    "own save: +0.44 GB of mapped pages in the `saving` phase); one layer's Hessians (float32 in × in per "
    "Linear, 0.37 GB, the down "
    "projection's 8192² alone 0.27 GB); and the temporary copy of the largest that the Cholesky factorization "
    "takes (torch's `out=` into a row-major tensor computes in a column-major copy, 0.27 GB). llm-compressor 0.14's "
    "own code also copied each Hessian twice more, when normalizing and stacking it and when permuting it for "
    "act-order; quantlab now does both in place (`compat.llmcompressor_gptq_lean`, bit-identical artifacts), which "
    "took the calibrating phase from 3.88 to 3.70 GB, so saving, with the embedding resident, now sets the peak. "
    "What would lower it further: Hessians kept on disk between accumulation and use, a factorization without the "
    "copy, and weights that own their memory (loaded out of the mapping layer by layer), so that compressing a "
    "module frees its bf16 pages before the embedding is read. "
    "AWQ: its grid search re-runs each mapping's parent module (the MLP: 16 × 256 tokens, 20 scales) per layer; on "
    "a 2-layer model of the 1B shape its RSS grew ~0.2 GB per layer beyond the layer's weights, and glibc's heap "
    "kept part of it (with `MALLOC_MMAP_THRESHOLD_=1048576` the 2-layer peak went from 1.98 to 1.87 GB). On the 1B "
    "model the calibrating phase ends ~2 GB above the `quantize none` row, ~0.12 GB per layer: what would bound it "
    "is freeing each layer's grid-search temporaries and smoothed-weight copies as the pipeline leaves the layer "
    "(not tried here), with glibc told to return large frees."
)

NOTES: dict[tuple[str, ...], str] = {
    ("quantize gptq", "quantize awq"): "quantize gptq, awq: " + _CALIBRATED,
    ("reference",): "reference: making the reference runs the same forwards and float64 log-softmax as scoring "
    "the baseline once, and writes each window's rows ((ctx − 1) × vocab × 4 bytes: 1.05 GB for the 1B model's "
    "2048 tokens), hashed and written on a thread while the next window is computed, then fsynced once. On a "
    "2-core host the forward already uses both cores, so the hashing (0.15 s per 262 MB window) and the copy into "
    "the page cache still take time from it: +8 to +11% over scoring once in the 1B runs made. Flushing each "
    "window as it was written was slower (the kernel's writeback beside the forward). On the default model a "
    "window's forward takes ~0.6 s, so fixed costs weigh more: in the sampled timelines, the final fsync of 400 MB "
    "and reopening the file ~0.5 s, the windows' hashing and writing ~0.5 s, and ~0.5 s more start-up before the "
    "model loads (the same CLI's imports; not the reference's work). What would remove the rest: a cheaper "
    "checksum than sha256 (crc32 took 0.06 s where sha256 took 0.15 s per 1B window), or no fsync (the file is a "
    "cache whose every window is checked when read).",
    ("bench gguf",): "bench gguf: the load step measures the speed context alone: the GGUF's mapped weights, the "
    "2048-token KV cache and llama.cpp's reserved buffers. Scoring a window adds llama.cpp's own output buffer and "
    "the compute buffer that hold 512 positions' float32 logits (0.26 + 0.27 GB at a 128k vocabulary, as "
    "llama-perplexity holds them), the window's logits that quantlab copies out once and turns into log-probs in "
    "place (0.26 GB), a 64-row block of the reference with the KL temporaries, and ~0.5 GB of process state the "
    "load child lacks before the first window (not broken down: torch, the token stream, the reference's header). "
    "Fixed already: llama-cpp-python's per-position `scores` mirror and the second context (the quality pass "
    "decodes through llama.cpp's batch API in the speed context), a second window-sized block of log-probs, and "
    "freed blocks glibc kept until the window ended. What would fix the rest: decode each window in smaller output "
    "batches (llama.cpp's buffers shrink with n_batch, but llama-perplexity scores in one 512-token batch, and "
    "matching it is what the KLD cross-check holds to), or count the quality pass's llama.cpp buffers in the "
    "cell's load footprint, as the transformers cell's first forward is counted in its own.",
    ("bench",): "bench: beside the loaded cell, `score()` in `quantlab/bench/quality.py` holds one window of "
    "vocabulary-wide rows ((ctx − 1) × vocab × 4 bytes) at its peak: the runtime's float32 logits, turned into "
    "log-probs in place, while the baseline's rows are read from the reference 64 at a time and freed memory is "
    "handed back to the OS after each block and window. A llama.cpp cell's own buffers are the note above.",
}
