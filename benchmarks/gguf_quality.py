"""The GGUF ladder on one model, against the HF fp32 baseline on the same token ids: what each type costs in
quality, what llama.cpp really wrote, and whether size and quality fall together.

    python benchmarks/gguf_quality.py [--model default] [--types F16,Q8_0,...] [--imatrix-types Q4_K_M,IQ4_XS,...]
        [--calib-dataset default] [--calib-samples 64] [--calib-seq-len 512] [--dataset default]
        [--max-tokens 16384] [--ctx 512] [--work-dir DIR] [--results FILE.jsonl]

Artifacts are cached in --work-dir (re-used when the spec matches). Prints the report (with the tensor-type
census and every neighbouring pair whose order breaks), then one PASS/FAIL line per check of the GGUF issue:
F16 ≈ HF, sizes strictly falling along the ladder, Q4_K_M with imatrix no worse than without.
"""

from __future__ import annotations

import argparse
import itertools

from common import add_quality_args, artifact_for, calibration_from

LADDER = "Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q3_K_M,Q2_K"
WITH_IMATRIX = "Q4_K_M,IQ4_XS,IQ3_M,IQ2_M"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_quality_args(parser, results="results/gguf.jsonl")
    parser.add_argument("--types", default="F16," + LADDER + ",Q4_0")
    parser.add_argument("--imatrix-types", default=WITH_IMATRIX)
    args = parser.parse_args()

    from quantlab import report
    from quantlab.bench import BenchConfig, bench
    from quantlab.paths import cache_dir
    from quantlab.spec import MethodSpec

    work = args.work_dir or cache_dir() / "benchmarks" / "gguf"
    calibration = calibration_from(args)
    wanted = {"none-fp32": MethodSpec(method="none", dtype="fp32")}
    wanted |= {t: MethodSpec(method="gguf", scheme=t) for t in args.types.split(",") if t}
    wanted |= {
        f"{t}-imatrix": MethodSpec(method="gguf", scheme=t, calibration=calibration)
        for t in args.imatrix_types.split(",")
        if t
    }
    paths = {
        name: artifact_for(
            args.model,
            spec,
            work / f"{args.model.replace('/', '--')}-{name}-c{args.calib_samples}x{args.calib_seq_len}",
        ).path
        for name, spec in wanted.items()
    }
    options = BenchConfig(dataset=args.dataset, ctx=args.ctx, max_tokens=args.max_tokens, speed=False)
    records = bench(list(paths.values()), baseline=paths["none-fp32"], config=options, results_path=args.results)
    print(report.markdown(records, title="GGUF types vs the HF fp32 baseline"))
    by = dict(zip(paths, records, strict=True))

    def check(ok: bool, text: str) -> None:
        print(f"{'PASS' if ok else 'FAIL'} {text}")

    if "F16" in by:
        vs = by["F16"].quality.vs_baseline
        check(
            abs(vs.delta_ppl_pct) <= 0.1 and vs.kld_mean <= 1e-3,
            f"F16 vs HF fp32: Δppl {vs.delta_ppl_pct:+.4f}% (≤ 0.1%), KLD {vs.kld_mean:.2e} (≤ 1e-3)",
        )
    ladder = [t for t in LADDER.split(",") if t in by]
    sizes = [by[t].artifact.weight_bytes for t in ladder]
    check(
        all(a > b for a, b in itertools.pairwise(sizes)),
        "file sizes strictly fall along "
        + " > ".join(f"{t} {s / 1e6:.1f} MB" for t, s in zip(ladder, sizes, strict=True)),
    )
    if "Q4_K_M" in by and "Q4_K_M-imatrix" in by:
        plain, weighted = by["Q4_K_M"].quality.vs_baseline.kld_mean, by["Q4_K_M-imatrix"].quality.vs_baseline.kld_mean
        check(weighted <= plain, f"Q4_K_M KLD with imatrix {weighted:.5f} ≤ without {plain:.5f}")


if __name__ == "__main__":
    main()
