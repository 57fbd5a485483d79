"""The load generator's own ceiling: how many streaming requests/s it sustains against a trivial local endpoint
(no model: `quantlab.serve.trivial`, in its own process), and how much it adds to inter-token latency.

    python -m benchmarks.crosschecks.load_generator_ceiling [--requests 300] [--output-tokens 32]
                                                             [--served results/served-smollm2.jsonl]

Target: it sustains ≥ 10× the request rate the CPU engines reach, so the served figures measure the engines, not
the generator (one PASS/FAIL line). The engines' best rate is read from the served results
(`python -m benchmarks.sweeps.served_load`). Both processes share this host's cores, so the ceiling printed is a
lower bound on the generator's own.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.lib.console import check

LEVELS = (1, 8, 32, 64)
TARGET = 10


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--output-tokens", type=int, default=32)
    parser.add_argument("--token-delay-ms", type=float, default=10.0, help="for the ITL overhead run")
    parser.add_argument("--served", type=Path, default=Path("results/served-smollm2.jsonl"))
    return parser


def sweep(token_delay_ms: float, concurrencies, requests, output_tokens: int, warm_up: bool) -> dict:
    """Concurrency → the level the load generator measured against a fresh trivial endpoint."""
    from quantlab.bench.loadgen import run_level
    from quantlab.serve import trivial
    from quantlab.serve.process import ServerProcess, free_port

    plan = trivial.plan(free_port(), token_delay_ms=token_delay_ms)
    with ServerProcess(plan, name=f"trivial endpoint ({token_delay_ms:g} ms per token)") as server:
        server.wait_ready(60)

        def level(batch, concurrency: int):
            return run_level(
                plan.base_url,
                model="trivial",
                requests=batch,
                concurrency=concurrency,
                max_tokens=output_tokens,
                extra_fields={},
            )

        if warm_up:
            level(requests[:20], 8)
        return {c: level(requests, c) for c in concurrencies}


def compare_with_engines(ceiling: float, served: Path) -> None:
    """The generator's ceiling against the best request rate any engine reached in the served results."""
    if not served.is_file():
        check(None, f"no served results at {served}; run `python -m benchmarks.sweeps.served_load` to compare")
        return
    from quantlab.results import read_results

    engines = [
        (r.load.engine, r.artifact.label, lv.concurrency, lv.requests_per_s)
        for r in read_results(served)
        if r.load
        for lv in r.load.levels
    ]
    engine, label, concurrency, best = max(engines, key=lambda e: e[3])
    ratio = ceiling / best
    check(
        ratio >= TARGET,
        f"generator ceiling {ceiling:,.0f} req/s = {ratio:,.0f}× the best CPU engine rate ({best:.2f} req/s: "
        f"{engine}, {label}, concurrency {concurrency}); target ≥ {TARGET}×",
    )


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    from quantlab.bench.loadgen import Request

    requests = [Request(prompt="x " * 64, prompt_tokens=128) for _ in range(args.requests)]
    rows = sweep(0, LEVELS, requests, args.output_tokens, warm_up=True)
    delayed = sweep(args.token_delay_ms, (1, 32), requests[:64], args.output_tokens, warm_up=False)
    print(f"trivial endpoint, {args.requests} streaming requests of {args.output_tokens} tokens per level")
    print("| concurrency | errors | requests/s | output tok/s | TTFT ms p50 | ITL ms p50 |")
    print("|---:|---:|---:|---:|---:|---:|")
    for concurrency, lv in rows.items():
        print(
            f"| {concurrency} | {lv.errors} | {lv.requests_per_s:,.0f} | {lv.output_tok_s:,.0f} | "
            f"{lv.ttft_ms.median:.2f} | {lv.itl_ms.median:.3f} |"
        )
    for c, lv in delayed.items():
        dist = lv.itl_ms
        print(
            f"ITL with a {args.token_delay_ms:g} ms token delay at concurrency {c}: median {dist.median:.2f} ms, "
            f"p99 {dist.p99:.2f} ms (overhead {dist.median - args.token_delay_ms:+.2f} ms)"
        )
    compare_with_engines(max(lv.requests_per_s for lv in rows.values()), args.served)


if __name__ == "__main__":
    main()
