"""quantlab's batch-1 GGUF decode against llama.cpp's own `llama-bench`, on the same files, threads and KV depth.

    python -m benchmarks.crosschecks.gguf_decode_vs_llama_bench [--model default] [--types F16,Q8_0,Q4_K_M]
        [--prompt 128] [--new 64] [--repeats 9] [--threads N] [--results results/gguf-speed-vs-llama-bench.ndjson]
    python -m benchmarks.crosschecks.gguf_decode_vs_llama_bench --render     # the markdown again, no measuring

For each GGUF type, `--repeats` rounds, each one quantlab run and one llama-bench run back to back (so host
noise hits both alike; the ratio is the median of the per-round ratios):
- quantlab: `LlamaCppSession.timed_generate` (what `quantlab bench` reports): prefill `--prompt` ids, then
  `--new` − 1 single-token decode steps, timed as one wall-clock span; decode tok/s = (new − 1) / decode_s.
  Beside it, llama.cpp's own context timer for the same run (`llama_perf_context` t_eval_ms): the gap between
  the two is quantlab's Python harness (llama-cpp-python's `eval`, reading the logits, argmax).
- llama-bench: `-p 0 -n (new − 1) -d prompt -r 1 -t threads -ngl 0 -fa off,auto -o json`: the same number of
  decode steps at the same KV depth, the same llama.cpp build (`quantlab.llamacpp.build`), `-fa off` being
  the in-process runtime's setting (llama-cpp-python's flash_attn=False) and `auto` llama.cpp's default.
Goal: quantlab / llama-bench (fa off) ≥ 0.9, one PASS/FAIL line per type.

Records compare two tools, not one artifact's measurement, so they are benchmark records (benchmarks/lib/records.py),
one per type appended to `--results`, and the markdown beside it is rendered from every record in that file.
Settings: model, prompt_tokens, decode_steps, repeats. Measurement: scheme, bits_per_weight, file, threads,
samples (per round: quantlab, quantlab_perf_counters, llama_bench_fa_off, llama_bench_fa_auto, in tok/s), their
medians (quantlab_tok_s, perf_counters_tok_s, llama_bench_fa_off_tok_s, llama_bench_fa_auto_tok_s), and ratio /
ratio_fa_auto (medians of the per-round ratios).
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

from benchmarks.lib.artifacts import gguf
from benchmarks.lib.console import check, log
from benchmarks.lib.records import BenchRecord, append_records, measured, read_records, runs_newest_first, start_run

BENCHMARK = "benchmarks.crosschecks.gguf_decode_vs_llama_bench"
GOAL = 0.9


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--types", default="F16,Q8_0,Q4_K_M")
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=None, help="default: the llamacpp runtime's (all cores)")
    parser.add_argument("--results", type=Path, default=Path("results/gguf-speed-vs-llama-bench.ndjson"))
    parser.add_argument("--render", action="store_true", help="only render the markdown of --results again")
    return parser


def paired_rounds(artifact, args, tools) -> dict[str, list[float]]:
    """`--repeats` rounds on one artifact, each a quantlab run then a llama-bench run: tok/s per round."""
    import numpy as np

    from quantlab.llamacpp import build, reference
    from quantlab.runtimes.llamacpp_rt import LlamaCppSession

    llama_cpp = build.llama_cpp()
    prompt = (np.arange(args.prompt, dtype=np.int64) * 7919 % 30000 + 100)[None]
    session = LlamaCppSession(artifact, "cpu")  # threads: QUANTLAB_THREADS (set from --threads), else all cores
    samples: dict[str, list[float]] = {
        "quantlab": [],
        "quantlab_perf_counters": [],
        "llama_bench_fa_off": [],
        "llama_bench_fa_auto": [],
    }
    try:
        session.timed_generate(prompt, args.new)  # warm-up (llama-bench warms up on its own)
        for _ in range(args.repeats):
            llama_cpp.llama_perf_context_reset(session._llm.ctx)
            t = session.timed_generate(prompt, args.new)
            perf = llama_cpp.llama_perf_context(session._llm.ctx)
            samples["quantlab"].append((t.new_tokens - 1) / t.decode_s)
            samples["quantlab_perf_counters"].append(perf.n_eval / (perf.t_eval_ms / 1e3))
            runs = reference.llama_bench_tg(
                artifact.path / artifact.manifest.gguf.file,
                n_gen=args.new - 1,
                threads=session.threads,
                repeats=1,
                depth=args.prompt,
                flash_attn="off,auto",
                tools_build=tools,
            )
            by_fa = {run.flash_attn: run.tok_s for run in runs}
            samples["llama_bench_fa_off"].append(by_fa["off"])
            samples["llama_bench_fa_auto"].append(by_fa["auto"])
    finally:
        session.close()
    return samples | {"threads": session.threads}


def measure(artifact, args, tools) -> dict:
    """One type's measurement: the raw samples of the paired rounds and their medians."""
    samples = paired_rounds(artifact, args, tools)
    threads = samples.pop("threads")
    ours, off, auto = samples["quantlab"], samples["llama_bench_fa_off"], samples["llama_bench_fa_auto"]
    med = statistics.median
    return {
        "scheme": artifact.manifest.gguf.file_type,
        "bits_per_weight": artifact.manifest.gguf.bits_per_weight,
        "file": Path(artifact.manifest.gguf.file).name,
        "threads": threads,
        "samples": samples,
        "quantlab_tok_s": med(ours),
        "perf_counters_tok_s": med(samples["quantlab_perf_counters"]),
        "llama_bench_fa_off_tok_s": med(off),
        "llama_bench_fa_auto_tok_s": med(auto),
        "ratio": med(o / b for o, b in zip(ours, off, strict=True)),
        "ratio_fa_auto": med(o / b for o, b in zip(ours, auto, strict=True)),
    }


def render(records: list[BenchRecord], source: str) -> str:
    """The markdown of every run in the results file, newest first, each with its host and settings."""
    out = [
        "# GGUF decode: quantlab's llamacpp runtime vs llama-bench",
        "",
        f"Generated by `python -m {BENCHMARK}` from `{source}`; never typed in.",
        f"Batch-1 decode tok/s on the same GGUF file, threads and KV depth; ratio = median over paired rounds of "
        f"quantlab / llama-bench (`-fa off`, the runtime's setting). Goal: ratio ≥ {GOAL}.",
    ]
    for rows in runs_newest_first(records):
        first, settings, tools = rows[0], rows[0].settings, rows[0].tools
        out += [
            "",
            f"## {first.timestamp} on {first.host.cpu} ({first.host.cpu_count} cores)",
            "",
            f"Model {settings['model']}; {settings['prompt_tokens']} prompt tokens (llama-bench `-d`), "
            f"{settings['decode_steps']} decode steps (`-n`), {settings['repeats']} paired rounds; quantlab "
            f"{first.quantlab_version}, llama-cpp-python {tools['llama_cpp_python']}, {tools['llama_cpp_build']}.",
            "",
            "| type | bits/weight | threads | quantlab tok/s | same runs, llama.cpp perf counters | "
            "llama-bench tok/s (fa off) | ratio | llama-bench tok/s (fa auto) | ratio vs fa auto | goal |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|:--|",
        ]
        for m in (r.measurement for r in rows):
            out.append(
                f"| {m['scheme']} | {m['bits_per_weight']:.2f} | {m['threads']} | {m['quantlab_tok_s']:.1f} "
                f"| {m['perf_counters_tok_s']:.1f} | {m['llama_bench_fa_off_tok_s']:.1f} | {m['ratio']:.3f} "
                f"| {m['llama_bench_fa_auto_tok_s']:.1f} | {m['ratio_fa_auto']:.3f} "
                f"| {'PASS' if m['ratio'] >= GOAL else 'FAIL'} |"
            )
    return "\n".join(out) + "\n"


def write_markdown(results: Path) -> None:
    text = render(read_records(results), results.name)
    results.with_suffix(".md").write_text(text, encoding="utf-8")
    print(text)


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.render:
        write_markdown(args.results)
        return
    if args.threads:
        os.environ["QUANTLAB_THREADS"] = str(args.threads)  # the llamacpp runtime's one switch for its threads

    from quantlab.llamacpp import build, reference

    tools = reference.tools()
    settings = {"model": args.model, "prompt_tokens": args.prompt, "decode_steps": args.new - 1}
    versions = {"llama_cpp_python": build.llama_cpp().__version__, "llama_cpp_build": tools.label}
    run = start_run(BENCHMARK, settings | {"repeats": args.repeats}, versions)
    records = []
    for scheme in args.types.split(","):
        artifact = gguf(args.model, scheme)
        log(f"measuring {scheme} ({args.repeats} paired rounds)")
        records.append(measured(run, measure(artifact, args, tools)))
    append_records(args.results, records)
    write_markdown(args.results)
    for m in (r.measurement for r in records):
        check(m["ratio"] >= GOAL, f"{m['scheme']}: quantlab / llama-bench decode = {m['ratio']:.3f} (goal ≥ {GOAL})")


if __name__ == "__main__":
    main()
