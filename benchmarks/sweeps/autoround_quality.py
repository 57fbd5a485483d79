"""Does AutoRound's tuned rounding beat GPTQ at the same bits, group size and calibration, and does a Hadamard
rotation (SpinQuant R1+R2, fused into the weights) lower the error of GPTQ W4 and of NVFP4 (W4A4)?

    python -m benchmarks.sweeps.autoround_quality [--results FILE.jsonl] [--work-dir DIR] [--set max_tokens=4096]

The cells are benchmarks/sweeps/recipes/autoround-smollm2.yaml (64 × 512 calibration tokens from WikiText-2 valid,
16384 held-out evaluation tokens from WikiText-2 test). Prints the report, then one PASS/FAIL line per target:
AutoRound's held-out KLD at most GPTQ's, and each rotated artifact's below its unrotated twin's; an INFO line gives
each artifact's size, since SpinQuant unties the embedding from the output head.
"""

from __future__ import annotations

from benchmarks.lib.console import check
from benchmarks.lib.sweep import run_sweep

PAIRS = (("autoround-w4", "gptq-w4"), ("gptq-w4-spinquant", "gptq-w4"), ("NVFP4-spinquant", "NVFP4"))


def main(argv: list[str] | None = None) -> None:
    by = run_sweep("autoround-smollm2", "results/autoround-smollm2.jsonl", __doc__, argv)
    for mine, theirs in PAIRS:
        a, b = by[mine].quality.vs_baseline, by[theirs].quality.vs_baseline
        strictly = mine.endswith("spinquant")
        ok = a.kld_mean < b.kld_mean if strictly else a.kld_mean <= b.kld_mean
        check(
            ok,
            f"{mine} held-out KLD {a.kld_mean:.5f} {'<' if strictly else '≤'} {theirs} {b.kld_mean:.5f} "
            f"(Δppl {a.delta_ppl_pct:+.2f}% vs {b.delta_ppl_pct:+.2f}%)",
        )
    sizes = ", ".join(f"{name} {r.artifact.weight_bytes / 1e6:.1f} MB" for name, r in by.items())
    check(None, f"sizes: {sizes}")


if __name__ == "__main__":
    main()
