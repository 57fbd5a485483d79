"""How much of llama.cpp's own batching gain `quantlab bench --load` gets, on the served workload, side by side.

    python -m benchmarks.crosschecks.served_batching_vs_batched_bench [--model default] [--type Q4_K_M]
        [--prompt 128] [--new 32] [--concurrency 1,8,32] [--repeats 3] [--threads N]
        [--results results/gguf-batching-ceiling.ndjson]
    python -m benchmarks.crosschecks.served_batching_vs_batched_bench --render   # the markdown again, no measuring

The served sweep's gain from batching (output tok/s at concurrency c / at concurrency 1) is bounded by what the
engine itself can do with c sequences. `llama-batched-bench` (built from the same tree as `llama-server`)
measures that with no HTTP, no scheduling and no staggered arrivals: c distinct `--prompt`-token prompts
prefilled together, then `--new` tokens decoded for all c at once, timed by llama.cpp. Its output tok/s
(c × new / total seconds) at c over that at 1 is the ceiling of the served ratio on this host, file, threads
and llama.cpp defaults (flash attention auto, batch 2048, ubatch 512: the same as the server's).

Each of `--repeats` rounds runs one served sweep (`bench_load`, engine llamacpp, the committed served
workload) and one llama-batched-bench run back to back, so host noise hits both alike; the table shows the
median over rounds of each ratio. One benchmark record (benchmarks/lib/records.py) per round is appended to
`--results`, and the markdown beside it is rendered from every record in that file. Settings: model, scheme,
prompt_tokens, new_tokens. Measurement: round, threads, launch (llama-server's flags), and per concurrency level
served_output_tok_s, served_ratio, served_ttft_p50_ms, batched_bench_output_tok_s, batched_bench_prefill_s,
batched_bench_decode_s, ceiling_ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

from benchmarks.lib.artifacts import gguf
from benchmarks.lib.console import log
from benchmarks.lib.records import BenchRecord, append_records, measured, read_records, runs_newest_first, start_run

BENCHMARK = "benchmarks.crosschecks.served_batching_vs_batched_bench"
CTX_MARGIN = 64  # the served sweep's per-slot margin (quantlab.bench.served), so both size the context alike
COLUMNS = (
    "| concurrency | served output tok/s | served ratio | served TTFT p50 ms | ceiling output tok/s "
    "| ceiling prefill s | ceiling decode s | ceiling ratio | served / ceiling |"
)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--type", default="Q4_K_M")
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--new", type=int, default=32)
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="default: all cores")
    parser.add_argument("--results", type=Path, default=Path("results/gguf-batching-ceiling.ndjson"))
    parser.add_argument("--render", action="store_true", help="only render the markdown of --results again")
    return parser


def served_sweep(artifact, args):
    """The served sweep of one round: its levels by concurrency and the Result (threads, launch flags)."""
    from quantlab.bench.config import BenchConfig
    from quantlab.bench.served import bench_load

    config = BenchConfig(
        engine="llamacpp",
        concurrency=args.concurrency,
        prompt_tokens=args.prompt,
        new_tokens=args.new,
        threads=args.threads,
    )
    served = bench_load(artifact.path, config=config)
    levels = {lv.concurrency: lv for lv in served.load.levels}
    if any(lv.errors for lv in levels.values()):
        raise SystemExit(f"served sweep had errors: {[lv.error_examples for lv in levels.values()]}")
    return levels, served


def one_round(artifact, args, tools) -> dict:
    from quantlab.llamacpp import reference

    levels, served = served_sweep(artifact, args)
    runs = reference.llama_batched_bench(
        artifact.path / artifact.manifest.gguf.file,
        prompt=args.prompt,
        gen=args.new,
        parallel=args.concurrency,
        threads=served.runtime.threads,
        ctx=max(args.concurrency) * (args.prompt + args.new + CTX_MARGIN),
        tools_build=tools,
    )
    ceiling = {run.parallel: run for run in runs}
    base_served, base_ceiling = levels[1].output_tok_s, ceiling[1].output_tok_s
    return {
        "threads": served.runtime.threads,
        "launch": served.load.launch,
        "levels": [
            {
                "concurrency": c,
                "served_output_tok_s": levels[c].output_tok_s,
                "served_ratio": levels[c].output_tok_s / base_served,
                "served_ttft_p50_ms": levels[c].ttft_ms.median,
                "batched_bench_output_tok_s": ceiling[c].output_tok_s,
                "batched_bench_prefill_s": ceiling[c].prefill_s,
                "batched_bench_decode_s": ceiling[c].decode_s,
                "ceiling_ratio": ceiling[c].output_tok_s / base_ceiling,
            }
            for c in args.concurrency
        ],
    }


def render(records: list[BenchRecord], source: str) -> str:
    out = [
        "# GGUF batching: the served sweep vs llama.cpp's own ceiling (llama-batched-bench)",
        "",
        f"Generated by `python -m {BENCHMARK}` from `{source}`; never typed in.",
        "Ratio = output tok/s at concurrency c / at concurrency 1. Served: `bench_load` with llama-server "
        "(closed loop, 2 × c requests, at least 8). Ceiling: llama-batched-bench, c distinct prompts prefilled "
        "together then decoded together, no HTTP. Medians over paired rounds.",
    ]
    for rows in runs_newest_first(records):
        first, settings = rows[0], rows[0].settings
        out += [
            "",
            f"## {first.timestamp} on {first.host.cpu} ({first.host.cpu_count} cores)",
            "",
            f"Model {settings['model']} {settings['scheme']}; {settings['prompt_tokens']}-token prompts, "
            f"{settings['new_tokens']} new tokens; {first.measurement['threads']} threads; {len(rows)} paired rounds; "
            f"{first.tools['llama_cpp_build']}. Server flags: `{' '.join(first.measurement['launch'])}`.",
            "",
            COLUMNS,
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        out += [
            level_row(i, [r.measurement["levels"][i] for r in rows]) for i in range(len(first.measurement["levels"]))
        ]
    return "\n".join(out) + "\n"


def level_row(i: int, col: list[dict]) -> str:
    """One concurrency level's row: each figure the median over the run's rounds."""

    def m(key: str) -> float:
        return statistics.median(c[key] for c in col)

    return (
        f"| {col[0]['concurrency']} | {m('served_output_tok_s'):.1f} | {m('served_ratio'):.2f}× "
        f"| {m('served_ttft_p50_ms'):,.0f} | {m('batched_bench_output_tok_s'):.1f} "
        f"| {m('batched_bench_prefill_s'):.3f} | {m('batched_bench_decode_s'):.3f} "
        f"| {m('ceiling_ratio'):.2f}× | {m('served_ratio') / m('ceiling_ratio'):.2f} |"
    )


def write_markdown(results: Path) -> None:
    text = render(read_records(results), results.name)
    results.with_suffix(".md").write_text(text, encoding="utf-8")
    print(text)


def main(argv: list[str] | None = None) -> None:
    parser_ = parser()
    args = parser_.parse_args(argv)
    if args.render:
        write_markdown(args.results)
        return
    if 1 not in args.concurrency:
        parser_.error("--concurrency must include 1 (the ratios' base)")
    args.threads = args.threads or os.cpu_count() or 1

    from quantlab.llamacpp import reference

    tools = reference.tools()
    artifact = gguf(args.model, args.type)
    settings = {"model": args.model, "scheme": args.type, "prompt_tokens": args.prompt, "new_tokens": args.new}
    run = start_run(BENCHMARK, settings, {"llama_cpp_build": tools.label})
    for i in range(args.repeats):
        record = measured(run, {"round": i, **one_round(artifact, args, tools)})
        append_records(args.results, [record])
        log(f"round {i + 1}/{args.repeats}: " + ", ".join(
            f"c{lv['concurrency']} served {lv['served_ratio']:.2f}× ceiling {lv['ceiling_ratio']:.2f}×"
            for lv in record.measurement["levels"]
        ))  # fmt: skip
    write_markdown(args.results)


if __name__ == "__main__":
    main()
