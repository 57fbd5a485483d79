"""The guide's other levers on the default model, measured side by side in one run: KV-cache types, prefix
caching, speculative decoding (self-speculation drafts, an equal-cost draft, draft-free n-grams), with goodput
under an SLO.

    python -m benchmarks.sweeps.serving_levers [--model default] [--target Q8_0] [--draft Q4_0] [--draft-tokens 4]
                                               [--self-draft-layers 2,4] [--no-equal-cost-draft]
                                               [--levers kv,kv-served,prefix,spec] [--slo ttft_ms=2000,tpot_ms=100]
                                               [--results results/levers-smollm2.jsonl]

Every record is a quantlab Result appended to `--results`; the report beside it (`quantlab report`, with its
table "The guide's claims, measured here") is rendered from that file at the end. All on llama.cpp (the one
engine quantlab drives that has every lever), target `--target` made from `--model`:
- kv: in-process, the target against itself with an explicit f16 cache, per KV type (f16, q8_0, q4_0): ppl and
  KLD over 16k tokens at ctx 512, batch-1 speed, and the KV bytes per token llama.cpp allocates;
- kv-served: one served sweep per type (concurrency 1 and 8; 128-token prompts, 32 new tokens).
- prefix: the guide's 2,048-token shared prefix + 64-token distinct suffix, llama-server's prompt cache off,
  then on (2,208 tokens of context per slot, within SmolLM2's 8,192).
- spec: the guide's claim assumes a draft many times cheaper than the target (8B drafting for 70B, ~9×), so the
  drafts are first measured for it: batch-1 decode tok/s of the target and of each draft in-process, in one run.
  Self-speculation drafts are the target's own first k layers (`--self-draft-layers`, pure `--draft`: see
  benchmarks.lib.drafts); the whole model in `--draft` is kept as the equal-cost draft it is. Then served, back
  to back: no speculation, each draft, n-gram lookup, at concurrency 1 and 8 (each speculative sweep records
  its greedy check).
Sweeps of one lever run back to back, so a ratio compares two measurements of the same minute.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks.lib.artifacts import gguf
from benchmarks.lib.console import log
from benchmarks.lib.drafts import self_draft

KV_TYPES = ("f16", "q8_0", "q4_0")


def kv(target, args) -> None:
    from quantlab.bench import BenchConfig, bench

    for dtype in KV_TYPES:
        config = BenchConfig(ctx=512, max_tokens=16384, batch_sizes=[1], kv_cache_dtype=dtype)
        bench([target.path], baseline=target.path, config=config, results_path=args.results, progress=log)


def kv_served(target, args) -> None:
    from quantlab.bench import BenchConfig, bench_load

    for dtype in KV_TYPES:
        config = BenchConfig(concurrency=[1, 8], kv_cache_dtype=dtype, slo=args.slo)
        bench_load(target.path, config=config, results_path=args.results, progress=log)


def prefix(target, args) -> None:
    from quantlab.bench import BenchConfig, bench_load

    for on in (False, True):
        config = BenchConfig(
            concurrency=[1, 8], shared_prefix_tokens=2048, prompt_tokens=64, prefix_cache=on, slo=args.slo
        )
        bench_load(target.path, config=config, results_path=args.results, progress=log)


def spec(target, args) -> None:
    """Drafts first measured for their cost per token (in-process batch-1 decode, beside the target in one run),
    then served: no speculation, each draft, n-gram lookup, back to back."""
    from quantlab.bench import BenchConfig, bench, bench_load

    drafts = [self_draft(args.model, int(k), args.draft) for k in args.self_draft_layers.split(",") if k]
    drafts += [gguf(args.model, args.draft)] if args.equal_cost_draft else []
    cost = BenchConfig(batch_sizes=[1], quality=False)
    bench([target.path, *(d.path for d in drafts)], config=cost, results_path=args.results, progress=log)
    for chosen in (None, *(str(d.path) for d in drafts), "ngram"):
        config = BenchConfig(
            concurrency=[1, 8],
            draft=chosen,
            draft_tokens=args.draft_tokens if chosen else None,
            slo=args.slo,
        )
        bench_load(target.path, config=config, results_path=args.results, progress=log)


LEVERS = {"kv": kv, "kv-served": kv_served, "prefix": prefix, "spec": spec}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--target", default="Q8_0")
    parser.add_argument("--draft", default="Q4_0", help="the drafts' llama.cpp type")
    parser.add_argument(
        "--self-draft-layers", default="2,4", help="drafts cut from the model's first k layers (comma-separated k)"
    )
    parser.add_argument(
        "--equal-cost-draft", action=argparse.BooleanOptionalAction, default=True,
        help="also draft with the whole model in --draft (costs about as much per token as the target)",
    )  # fmt: skip
    parser.add_argument("--draft-tokens", type=int, default=4)
    parser.add_argument("--levers", default=",".join(LEVERS))
    parser.add_argument("--slo", default="ttft_ms=2000,tpot_ms=100", help="default: MLPerf llama3.1-8b's SLO")
    parser.add_argument("--results", type=Path, default=Path("results/levers-smollm2.jsonl"))
    args = parser.parse_args(argv)
    chosen = args.levers.split(",")
    unknown = [lever for lever in chosen if lever not in LEVERS]
    if unknown:
        parser.error(f"unknown lever {unknown[0]!r}; levers: {', '.join(LEVERS)}")

    from quantlab.report import select, write_report
    from quantlab.results import read_results

    target = gguf(args.model, args.target)
    start = time.monotonic()
    for lever in chosen:
        log(f"lever {lever}")
        LEVERS[lever](target, args)
    written = write_report(select(read_results(args.results)), args.results)
    log(f"done in {(time.monotonic() - start) / 60:.1f} min: {', '.join(map(str, written[:1]))}")


if __name__ == "__main__":
    main()
