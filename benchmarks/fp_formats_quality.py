"""FP8, FP4 and bitsandbytes on one model, against the fp32 baseline and RTN int4 on the same token ids: what
each format costs in quality and on disk, and how it runs here (each result's kernel label).

    python benchmarks/fp_formats_quality.py [--model default] [--calib-dataset default] [--calib-samples 64]
        [--calib-seq-len 512] [--dataset default] [--max-tokens 16384] [--ctx 512] [--no-speed]
        [--work-dir DIR] [--results FILE.jsonl]

Quality runs in this process against the fp32 baseline; unless --no-speed, every artifact is also loaded in a
fresh process (`from_pretrained`, as a user would) for a batch-1 speed run, which records the kernel path.
On a CPU the FP8/FP4 speed is emulated or dequantized and the report marks it. Prints the report, then one
PASS/FAIL/INFO line per check of the formats issue: every FP8 scheme below every 4-bit one in KLD, FP8
weight-only losing less than W8A8, NVFP4 vs MXFP4 and NF4 vs FP4, and the on-disk size order.
"""

from __future__ import annotations

import argparse

from common import add_quality_args, artifact_for, calibration_from

FP8 = ["FP8_DYNAMIC", "FP8_BLOCK", "FP8_W8A16"]
FP4 = ["NVFP4", "NVFP4A16", "MXFP4", "MXFP4A16"]
BNB4 = [("nf4", False), ("fp4", False), ("nf4", True), ("fp4", True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_quality_args(parser, results="results/fp-formats.jsonl")
    parser.add_argument("--speed", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()

    from quantlab.bench import BenchConfig, bench
    from quantlab.errors import SpecError
    from quantlab.paths import cache_dir
    from quantlab.report import markdown
    from quantlab.spec import MethodSpec

    work = args.work_dir or cache_dir() / "benchmarks" / "fp-formats"
    calibration = calibration_from(args)
    wanted = {
        "none-fp32": MethodSpec(method="none", dtype="fp32"),
        "none-bf16": MethodSpec(method="none", dtype="bf16"),
        "rtn-w4": MethodSpec(method="rtn", bits=4, group_size=64, symmetric=True),
    }
    wanted |= {s: MethodSpec(method="fp8", scheme=s) for s in FP8}
    wanted |= {s: MethodSpec(method="fp4", scheme=s, calibration=calibration if s == "NVFP4" else None) for s in FP4}
    wanted |= {f"bnb-{s}{'-dq' if dq else ''}": MethodSpec(method="bnb", scheme=s, double_quant=dq) for s, dq in BNB4}
    wanted["bnb-int8"] = MethodSpec(method="bnb", scheme="int8")
    tag = f"{args.model.replace('/', '--')}-c{args.calib_samples}x{args.calib_seq_len}"
    paths = {}
    for name, spec in wanted.items():
        try:
            paths[name] = artifact_for(args.model, spec, work / f"{tag}-{name}").path
        except SpecError as exc:  # a scheme this model's widths cannot take: say so, measure the rest
            print(f"SKIP {name}: {exc}")
    options = BenchConfig(
        dataset=args.dataset, ctx=args.ctx, max_tokens=args.max_tokens, speed=args.speed, batch_sizes=[1]
    )
    records = bench(
        list(paths.values()),
        baseline=paths["none-fp32"],
        config=options,
        results_path=args.results,
        progress=lambda msg: print(f"  {msg}", flush=True),
    )
    print(markdown(records, title="FP8, FP4 and bitsandbytes vs the fp32 baseline"))
    by = dict(zip(paths, records, strict=True))

    def kld(name: str) -> float:
        return by[name].quality.vs_baseline.kld_mean

    def dppl(name: str) -> float:
        return by[name].quality.vs_baseline.delta_ppl_pct

    def check(ok: bool | None, text: str) -> None:
        print(f"{'INFO' if ok is None else 'PASS' if ok else 'FAIL'} {text}")

    fp8 = [s for s in FP8 if s in by]
    four_bit = ["rtn-w4", *FP4, *(f"bnb-{s}{'-dq' if dq else ''}" for s, dq in BNB4)]
    worst_fp8 = max(fp8, key=kld)
    best_4bit = min(four_bit, key=kld)
    check(
        kld(worst_fp8) < kld(best_4bit),
        f"every FP8 below every 4-bit scheme in KLD: worst FP8 {worst_fp8} "
        f"{kld(worst_fp8):.5f} < best 4-bit {best_4bit} {kld(best_4bit):.5f}",
    )
    check(
        dppl("FP8_W8A16") < dppl("FP8_DYNAMIC"),
        f"FP8 weight-only loses less ppl than FP8_DYNAMIC: Δppl "
        f"{dppl('FP8_W8A16'):+.3f}% < {dppl('FP8_DYNAMIC'):+.3f}% (KLD {kld('FP8_W8A16'):.5f} vs "
        f"{kld('FP8_DYNAMIC'):.5f})",
    )
    for a, b in (("NVFP4", "MXFP4"), ("NVFP4A16", "MXFP4A16"), ("bnb-nf4", "bnb-fp4"), ("bnb-nf4-dq", "bnb-fp4-dq")):
        check(
            None,
            f"{a} vs {b}: KLD {kld(a):.5f} vs {kld(b):.5f}, Δppl {dppl(a):+.2f}% vs {dppl(b):+.2f}% "
            f"({'as' if kld(a) < kld(b) else 'NOT as'} the literature expects)",
        )
    size = {name: by[name].artifact.weight_bytes for name in by}
    fp8_min = min(size[s] for s in fp8)
    check(
        max(size[s] for s in fp8) < size["none-bf16"],
        f"every FP8 artifact smaller than bf16 ({fp8_min / 1e6:.1f}"
        f"–{max(size[s] for s in fp8) / 1e6:.1f} MB < {size['none-bf16'] / 1e6:.1f} MB)",
    )
    small = [*FP4, *(f"bnb-{s}{'-dq' if dq else ''}" for s, dq in BNB4)]
    check(
        max(size[s] for s in small) < fp8_min,
        f"every FP4 and bnb 4-bit artifact smaller than every FP8 one "
        f"(≤ {max(size[s] for s in small) / 1e6:.1f} MB < {fp8_min / 1e6:.1f} MB)",
    )
    for name in by:
        print(f"  {name}: {size[name] / 1e6:.1f} MB, kernel {by[name].runtime.kernel}")


if __name__ == "__main__":
    main()
