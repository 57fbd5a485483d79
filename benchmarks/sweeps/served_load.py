"""The guide's batching table from real servers: SmolLM2-135M as bf16, GPTQ w4 (calibrated) and GGUF Q4_K_M,
each served by its engine and driven at concurrency 1, 8 and 32 with streaming requests.

    python -m benchmarks.sweeps.served_load [--results FILE.jsonl] [--work-dir DIR] [--set concurrency=[1,8]]

The cells are benchmarks/sweeps/recipes/served-smollm2.yaml. Prints the report, then PASS/FAIL lines for the
serving targets (zero errors; total tok/s at 8 > at 1 for every engine that batches; a non-batching engine
labelled so) and llama-server's (GGUF Q4_K_M: output tok/s at 8 ≥ 2.0× at 1, TTFT p50 at 32 ≤ 15 s).
"""

from __future__ import annotations

from benchmarks.lib.console import check
from benchmarks.lib.sweep import run_sweep

GGUF_GAIN_AT_8 = 2.0  # llama-server: output tok/s at concurrency 8 over 1
GGUF_TTFT_P50_AT_32_MS = 15_000


def main(argv: list[str] | None = None) -> None:
    by = run_sweep("served-smollm2", "results/served-smollm2.jsonl", __doc__, argv)
    for r in by.values():
        if r.load.engine == "llamacpp":
            _llama_server_checks(r)
        levels = {lv.concurrency: lv for lv in r.load.levels}
        errors = sum(lv.errors for lv in r.load.levels)
        check(errors == 0, f"{r.artifact.label} via {r.load.engine}: {errors} errors")
        if 1 in levels and 8 in levels:
            gain = levels[8].total_tok_s / levels[1].total_tok_s
            if r.load.batches:
                check(gain > 1, f"{r.load.engine} batches: total tok/s at 8 = {gain:.2f}× at 1")
            else:
                check(
                    None,
                    f"{r.load.engine} does not batch (labelled so in the table): total tok/s at 8 = {gain:.2f}× at 1",
                )


def _llama_server_checks(r) -> None:
    levels = {lv.concurrency: lv for lv in r.load.levels}
    if 1 in levels and 8 in levels:
        gain = levels[8].output_tok_s / levels[1].output_tok_s
        check(gain >= GGUF_GAIN_AT_8, f"llama-server: output tok/s at 8 = {gain:.2f}× at 1 (≥ {GGUF_GAIN_AT_8})")
    if 32 in levels and levels[32].ttft_ms is not None:
        p50 = levels[32].ttft_ms.median
        check(p50 <= GGUF_TTFT_P50_AT_32_MS, f"llama-server: TTFT p50 at 32 = {p50 / 1000:.1f} s (≤ 15 s)")


if __name__ == "__main__":
    main()
