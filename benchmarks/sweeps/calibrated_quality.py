"""Do the calibrated methods beat round-to-nearest? GPTQ and AWQ through every CPU backend against RTN
(symmetric and asymmetric) at the same bits and group size, on the same evaluation tokens.

    python -m benchmarks.sweeps.calibrated_quality [--results FILE.jsonl] [--work-dir DIR] [--set max_tokens=4096]

The cells are benchmarks/sweeps/recipes/calibrated-smollm2.yaml (64 × 512 calibration tokens, 16384 evaluation
tokens). Prints the report, then one line per ordering: PASS/FAIL ppl and KLD of each calibrated artifact against
RTN with the same symmetry.
"""

from __future__ import annotations

from benchmarks.lib.console import check
from benchmarks.lib.sweep import run_sweep


def main(argv: list[str] | None = None) -> None:
    by = run_sweep("calibrated-smollm2", "results/calibrated-smollm2.jsonl", __doc__, argv)
    for name, record in by.items():
        if not name.startswith(("gptq", "awq")):
            continue
        rtn = by["rtn-sym" if record.artifact.label.endswith(" sym") else "rtn-asym"]
        q, r = record.quality, rtn.quality
        for metric, mine, theirs in (("ppl", q.ppl, r.ppl), ("KLD", q.vs_baseline.kld_mean, r.vs_baseline.kld_mean)):
            check(mine < theirs, f"{name} {metric} {mine:.4f} < {rtn.artifact.label} {theirs:.4f}")


if __name__ == "__main__":
    main()
