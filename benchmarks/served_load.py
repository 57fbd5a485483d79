"""The guide's batching table from real servers: SmolLM2-135M as bf16, GPTQ w4 (calibrated) and GGUF Q4_K_M,
each served by its engine and driven at concurrency 1, 8 and 32 with streaming requests.

    python benchmarks/served_load.py [--concurrency 1,8,32] [--prompt-tokens 128] [--output-tokens 32]
                                     [--results results/served-smollm2.jsonl]

Requests per level: 2 × concurrency (at least 8). Prints PASS/FAIL lines for the serving issue's checks (zero
errors; total tok/s at 8 > at 1 for every engine that batches; the non-batching engine labelled so) and writes
the report next to the results file. Artifacts are cached under ~/.cache/quantlab/benchmarks/served/.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import artifact_for

from quantlab.paths import cache_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--output-tokens", type=int, default=32)
    parser.add_argument("--results", type=Path, default=Path("results/served-smollm2.jsonl"))
    args = parser.parse_args()

    from quantlab import report
    from quantlab.bench import BenchConfig, bench_load
    from quantlab.spec import Calibration, MethodSpec

    specs = {
        "none-bf16": MethodSpec(method="none", dtype="bf16"),
        "gptq-w4-g64": MethodSpec(method="gptq", bits=4, group_size=64, calibration=Calibration()),
        "gguf-q4_k_m": MethodSpec(method="gguf", scheme="Q4_K_M"),
    }
    work = cache_dir() / "benchmarks" / "served"
    levels = [int(c) for c in args.concurrency.split(",")]
    options = BenchConfig(concurrency=levels, prompt_tokens=args.prompt_tokens, new_tokens=args.output_tokens)
    records = []
    for name, spec in specs.items():
        artifact = artifact_for(args.model, spec, work / name)
        print(f"{name}: serving", flush=True)
        records.append(
            bench_load(
                artifact.path,
                config=options,
                results_path=args.results,
                progress=lambda msg: print(f"  {msg}", flush=True),
            )
        )
    from quantlab.results import read_results

    # what `quantlab report RESULTS --out RESULTS.md` writes
    text = report.markdown(report.select(read_results(args.results)))
    args.results.with_suffix(".md").write_text(text, encoding="utf-8")
    print(text)
    for r in records:
        by = {lv.concurrency: lv for lv in r.load.levels}
        errors = sum(lv.errors for lv in r.load.levels)
        print(f"{'PASS' if errors == 0 else 'FAIL'}: {r.artifact.label} via {r.load.engine}: {errors} errors")
        if 1 in by and 8 in by:
            gain = by[8].total_tok_s / by[1].total_tok_s
            if r.load.batches:
                print(f"{'PASS' if gain > 1 else 'FAIL'}: {r.load.engine} batches: total tok/s at 8 = {gain:.2f}× at 1")
            else:
                print(
                    f"INFO: {r.load.engine} does not batch (labelled so in the table): total tok/s at 8 = "
                    f"{gain:.2f}× at 1"
                )


if __name__ == "__main__":
    main()
