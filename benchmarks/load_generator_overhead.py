"""The load generator's own ceiling: how many streaming requests/s it sustains against a trivial local endpoint
(no model: `quantlab.serve.trivial`, in its own process), and how much it adds to inter-token latency.

    python benchmarks/load_generator_overhead.py [--requests 300] [--output-tokens 32]
                                                 [--served results/served-smollm2.jsonl]

Target (serving issue): it sustains ≥ 10× the request rate the CPU engines reach. The engines' best rate is
read from the served results (benchmarks/served_load.py). Both processes share this host's cores, so the
ceiling printed is a lower bound on the generator's own.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--output-tokens", type=int, default=32)
    parser.add_argument("--token-delay-ms", type=float, default=10.0, help="for the ITL overhead run")
    parser.add_argument("--served", type=Path, default=Path("results/served-smollm2.jsonl"))
    args = parser.parse_args()

    from quantlab.bench.loadgen import Request, run_level
    from quantlab.serve import trivial
    from quantlab.serve.process import ServerProcess, free_port

    requests = [Request(prompt="x " * 64, prompt_tokens=128) for _ in range(args.requests)]
    rows = []
    plan = trivial.plan(free_port())
    with ServerProcess(plan, name="trivial endpoint") as server:
        server.wait_ready(60)
        run_level(
            plan.base_url,
            model="trivial",
            requests=requests[:20],
            concurrency=8,
            max_tokens=args.output_tokens,
            extra_fields={},
        )  # warm-up
        for concurrency in (1, 8, 32, 64):
            lv = run_level(
                plan.base_url,
                model="trivial",
                requests=requests,
                concurrency=concurrency,
                max_tokens=args.output_tokens,
                extra_fields={},
            )
            rows.append((concurrency, lv))
    delayed = trivial.plan(free_port(), token_delay_ms=args.token_delay_ms)
    with ServerProcess(delayed, name="trivial endpoint (delayed)") as server:
        server.wait_ready(60)
        itl = {
            c: run_level(
                delayed.base_url,
                model="trivial",
                requests=requests[:64],
                concurrency=c,
                max_tokens=args.output_tokens,
                extra_fields={},
            ).itl_ms
            for c in (1, 32)
        }

    print(f"trivial endpoint, {args.requests} streaming requests of {args.output_tokens} tokens per level")
    print("| concurrency | errors | requests/s | output tok/s | TTFT ms p50 | ITL ms p50 |")
    print("|---:|---:|---:|---:|---:|---:|")
    for concurrency, lv in rows:
        print(
            f"| {concurrency} | {lv.errors} | {lv.requests_per_s:,.0f} | {lv.output_tok_s:,.0f} | "
            f"{lv.ttft_ms.median:.2f} | {lv.itl_ms.median:.3f} |"
        )
    for c, dist in itl.items():
        print(
            f"ITL with a {args.token_delay_ms:g} ms token delay at concurrency {c}: median {dist.median:.2f} ms, "
            f"p99 {dist.p99:.2f} ms (overhead {dist.median - args.token_delay_ms:+.2f} ms)"
        )
    ceiling = max(lv.requests_per_s for _, lv in rows)
    if not args.served.is_file():
        print(f"INFO: no served results at {args.served}; run benchmarks/served_load.py to compare")
        return
    from quantlab.results import read_results

    engines = [
        (r.load.engine, r.artifact.label, lv.concurrency, lv.requests_per_s)
        for r in read_results(args.served)
        if r.load
        for lv in r.load.levels
    ]
    engine, label, concurrency, best = max(engines, key=lambda e: e[3])
    ratio = ceiling / best
    print(
        f"{'PASS' if ratio >= 10 else 'FAIL'}: generator ceiling {ceiling:,.0f} req/s = {ratio:,.0f}× the best "
        f"CPU engine rate ({best:.2f} req/s: {engine}, {label}, concurrency {concurrency}); target ≥ 10×"
    )


if __name__ == "__main__":
    main()
