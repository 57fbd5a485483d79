"""Do the calibrated methods beat round-to-nearest? GPTQ and AWQ through every usable backend against RTN
(symmetric and asymmetric) at the same bits and group size, on the same evaluation tokens.

    python benchmarks/calibrated_quality.py [--model default] [--group-size 64] [--calib-samples 64]
        [--calib-seq-len 512] [--max-tokens 16384] [--ctx 512] [--work-dir DIR] [--results FILE.jsonl]

Artifacts are cached in --work-dir (re-used when the spec and source match). Appends quality records to
--results, prints the table, then one line per ordering: PASS/FAIL ppl and KLD of each calibrated artifact
against RTN with the same symmetry.
"""

from __future__ import annotations

import argparse

from common import add_quality_args, artifact_for, calibration_from

CALIBRATED = [
    ("gptq", "llmcompressor"),
    ("gptq", "gptqmodel"),
    ("awq", "llmcompressor"),
    ("awq", "gptqmodel"),
    ("awq", "autoawq"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_quality_args(parser, results="results/calibrated.jsonl")
    parser.add_argument("--group-size", type=int, default=64)
    parser.add_argument("--backends", default=",".join("/".join(k) for k in CALIBRATED))
    args = parser.parse_args()

    from quantlab import report
    from quantlab.bench import BenchConfig, bench
    from quantlab.methods import get_backend
    from quantlab.paths import cache_dir
    from quantlab.spec import MethodSpec

    work = args.work_dir or cache_dir() / "benchmarks" / "calibrated"
    calibration = calibration_from(args)
    wanted = {
        "none-fp32": MethodSpec(method="none", dtype="fp32"),
        "rtn-sym": MethodSpec(method="rtn", bits=4, group_size=args.group_size, symmetric=True),
        "rtn-asym": MethodSpec(method="rtn", bits=4, group_size=args.group_size, symmetric=False),
    }
    for item in args.backends.split(","):
        method, backend = item.split("/")
        if get_backend(method, backend).availability().usable:
            wanted[f"{method}-{backend}"] = MethodSpec(
                method=method, backend=backend, bits=4, group_size=args.group_size, calibration=calibration
            )
        else:
            print(f"skipping {item}: {get_backend(method, backend).availability().reason}")
    paths = {}
    for name, spec in wanted.items():
        artifact = artifact_for(
            args.model, spec, work / f"{name}-g{args.group_size}-c{args.calib_samples}x{args.calib_seq_len}"
        )
        print(f"{name}: {artifact.manifest.quantize_seconds:.0f} s to quantize", flush=True)
        paths[name] = artifact.path
    options = BenchConfig(dataset=args.dataset, ctx=args.ctx, max_tokens=args.max_tokens, speed=False)
    records = bench(list(paths.values()), baseline=paths["none-fp32"], config=options, results_path=args.results)
    print(report.markdown(records, title="calibrated 4-bit vs round-to-nearest"))
    by_name = dict(zip(paths, records, strict=True))
    for name, record in by_name.items():
        if not name.startswith(("gptq", "awq")):
            continue
        rtn = by_name["rtn-sym" if record.artifact.label.endswith(" sym") else "rtn-asym"]
        q, r = record.quality, rtn.quality
        for metric, mine, theirs in (("ppl", q.ppl, r.ppl), ("KLD", q.vs_baseline.kld_mean, r.vs_baseline.kld_mean)):
            verdict = "PASS" if mine < theirs else "FAIL"
            print(f"{verdict} {name} {metric} {mine:.4f} < {rtn.artifact.label} {theirs:.4f}")


if __name__ == "__main__":
    main()
