"""The transformers runtime's compiled decode loop against its eager one, side by side in one run.

    python -m benchmarks.crosschecks.compiled_vs_eager_decode [--model default] [--dtypes bf16,fp32]
        [--batch-sizes 1,8] [--rounds 2] [--results results/compiled-decode-smollm2.jsonl]

For each dtype: a `none` artifact of `--model` (kept in the quantlab cache), then `--rounds` rounds of
`quantlab bench --no-quality` eager and `--compile`, back to back, so each ratio compares two measurements of
the same minute. Every compiled record also says whether its greedy output equals the eager loop's (the speed
worker checks each compiled shape against eager decoding over the same static cache, which is what compiling
alone may change, and over the eager loop's DynamicCache). Prints one row per dtype and batch size: decode tok/s
eager and compiled (median over rounds), the ratio, compile seconds (summed over the batch sizes of one record;
the first round compiles cold, later ones reuse inductor's cache) and the greedy checks (sequences over all
batch sizes and rounds); the records go to `--results` and the report beside it, which also says where the
batch-1 decode time goes (profiler). The table is also written to `<results>-ratios.md`.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from benchmarks.lib.artifacts import unquantized
from benchmarks.lib.console import log

HEADER = [
    "| dtype | batch | eager decode tok/s | compiled decode tok/s | compiled/eager | compile s | greedy "
    "= eager, same static cache | greedy = eager loop (DynamicCache) |",
    "|---|---:|---:|---:|---:|---:|---|---|",
]


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--dtypes", default="bf16,fp32")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--results", type=Path, default=Path("results/compiled-decode-smollm2.jsonl"))
    return parser


def paired_rounds(args, dtype: str, batch_sizes: list[int]) -> dict[bool, list]:
    """compiled? → the records of `--rounds` rounds, each an eager bench then a compiled one."""
    from quantlab.bench import BenchConfig, bench

    made = unquantized(args.model, dtype)
    runs: dict[bool, list] = {False: [], True: []}
    for round_ in range(args.rounds):
        for compiled in (False, True):
            log(f"{dtype}: round {round_ + 1}/{args.rounds}, {'compiled' if compiled else 'eager'}")
            config = BenchConfig(quality=False, compile=compiled, profile=True, batch_sizes=batch_sizes, repeats=3)
            runs[compiled] += bench([made.path], config=config, results_path=args.results, progress=log)
    return runs


def table_row(dtype: str, batch: int, runs: dict[bool, list]) -> str:
    def tok_s(records) -> float:
        return statistics.median(next(p for p in r.speed if p.batch_size == batch).decode_tok_s.median for r in records)

    eager, compiled = tok_s(runs[False]), tok_s(runs[True])
    decode = [r.runtime.decode for r in runs[True]]
    sequences = sum(d.eager_check_sequences for d in decode)
    row = (
        f"| {dtype} | {batch} | {eager:.1f} | {compiled:.1f} | {compiled / eager:.2f}× | "
        f"{statistics.median(d.compile_s or 0 for d in decode):.0f} | "
        f"{sum(d.eager_check_identical for d in decode)}/{sequences} | "
        f"{sum(d.eager_check_identical_dynamic for d in decode)}/{sequences} |"
    )
    if any(d.mode != "compiled" for d in decode):
        row += f" fell back: {decode[0].fallback} |"
    return row


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    from quantlab.report.render import write_report
    from quantlab.report.selection import select
    from quantlab.results import read_results

    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    rows = []
    for dtype in args.dtypes.split(","):
        runs = paired_rounds(args, dtype, batch_sizes)
        rows += [table_row(dtype, batch, runs) for batch in batch_sizes]
    write_report(select(read_results(args.results)), args.results)
    table = "\n".join([*HEADER, *rows])
    print(table)
    side = args.results.with_name(args.results.stem + "-ratios.md")
    side.write_text(
        f"# Compiled vs eager decode, {args.model}, this host\n\nMade by `python -m "
        f"benchmarks.crosschecks.compiled_vs_eager_decode --dtypes {args.dtypes} --batch-sizes {args.batch_sizes} "
        f"--rounds {args.rounds}`; medians over rounds of the median of 3 repeats; records in `{args.results.name}`."
        f"\n\n{table}\n",
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
