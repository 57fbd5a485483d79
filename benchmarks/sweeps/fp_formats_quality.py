"""FP8, FP4 and bitsandbytes on one model, against the fp32 baseline and RTN int4 on the same token ids: what
each format costs in quality and on disk, and how it runs here (each result's kernel label).

    python -m benchmarks.sweeps.fp_formats_quality [--results FILE.jsonl] [--work-dir DIR] [--set speed=false]

The cells are benchmarks/sweeps/recipes/fp-formats-smollm2.yaml. Quality runs against the fp32 baseline; unless
`--set speed=false`, every artifact is also loaded in a fresh process for a batch-1 speed run, which records the
kernel path. On a CPU the FP8/FP4 speed is emulated or dequantized and the report marks it. Prints the report,
then one PASS/FAIL/INFO line per expectation from the literature: every FP8 scheme below every 4-bit one in KLD,
FP8 weight-only losing less than W8A8, NVFP4 vs MXFP4 and NF4 vs FP4 (reported, not checked), and the on-disk
size order (FP8 below bf16, every 4-bit format below every FP8 one).
"""

from __future__ import annotations

from benchmarks.lib.console import check
from benchmarks.lib.sweep import run_sweep

FP8 = ["FP8_DYNAMIC", "FP8_W8A16"]
FP4 = ["NVFP4", "NVFP4A16", "MXFP4", "MXFP4A16"]
BNB4 = ["bnb-nf4", "bnb-fp4", "bnb-nf4-dq", "bnb-fp4-dq"]


def main(argv: list[str] | None = None) -> None:
    by = run_sweep("fp-formats-smollm2", "results/fp-formats-smollm2.jsonl", __doc__, argv)

    def kld(name: str) -> float:
        return by[name].quality.vs_baseline.kld_mean

    def dppl(name: str) -> float:
        return by[name].quality.vs_baseline.delta_ppl_pct

    worst_fp8 = max(FP8, key=kld)
    best_4bit = min(["rtn-w4", *FP4, *BNB4], key=kld)
    check(
        kld(worst_fp8) < kld(best_4bit),
        f"every FP8 below every 4-bit scheme in KLD: worst FP8 {worst_fp8} {kld(worst_fp8):.5f} < best 4-bit "
        f"{best_4bit} {kld(best_4bit):.5f}",
    )
    check(
        dppl("FP8_W8A16") < dppl("FP8_DYNAMIC"),
        f"FP8 weight-only loses less ppl than FP8_DYNAMIC: Δppl {dppl('FP8_W8A16'):+.3f}% < "
        f"{dppl('FP8_DYNAMIC'):+.3f}% (KLD {kld('FP8_W8A16'):.5f} vs {kld('FP8_DYNAMIC'):.5f})",
    )
    for a, b in (("NVFP4", "MXFP4"), ("NVFP4A16", "MXFP4A16"), ("bnb-nf4", "bnb-fp4"), ("bnb-nf4-dq", "bnb-fp4-dq")):
        check(
            None,
            f"{a} vs {b}: KLD {kld(a):.5f} vs {kld(b):.5f}, Δppl {dppl(a):+.2f}% vs {dppl(b):+.2f}% "
            f"({'as' if kld(a) < kld(b) else 'NOT as'} the literature expects)",
        )
    size = {name: r.artifact.weight_bytes for name, r in by.items()}
    fp8_min, fp8_max = min(size[s] for s in FP8), max(size[s] for s in FP8)
    check(
        fp8_max < size["none-bf16"],
        f"every FP8 artifact smaller than bf16 ({fp8_min / 1e6:.1f}–{fp8_max / 1e6:.1f} MB < "
        f"{size['none-bf16'] / 1e6:.1f} MB)",
    )
    small = max(size[s] for s in [*FP4, *BNB4])
    check(
        small < fp8_min,
        f"every FP4 and bnb 4-bit artifact smaller than every FP8 one (≤ {small / 1e6:.1f} MB < "
        f"{fp8_min / 1e6:.1f} MB)",
    )
    for name, r in by.items():
        print(f"  {name}: {size[name] / 1e6:.1f} MB, kernel {r.runtime.kernel}")


if __name__ == "__main__":
    main()
