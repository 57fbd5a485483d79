"""The GGUF ladder on one model, against the HF fp32 baseline on the same token ids: what each type costs in
quality, what llama.cpp really wrote, and whether size and quality fall together.

    python -m benchmarks.sweeps.gguf_quality [--results FILE.jsonl] [--work-dir DIR] [--set max_tokens=4096]

The cells are benchmarks/sweeps/recipes/gguf-smollm2.yaml. Prints the report (with the tensor-type census and
every neighbouring pair whose order breaks), then one PASS/FAIL line per GGUF target: F16 within 0.1% ppl and
1e-3 KLD of HF fp32 (the converter loses nothing), file sizes strictly falling along the k-quant ladder, Q4_K_M
with an importance matrix no worse in KLD than without.
"""

from __future__ import annotations

import itertools

from benchmarks.lib.console import check
from benchmarks.lib.sweep import run_sweep

LADDER = ["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K"]


def main(argv: list[str] | None = None) -> None:
    by = run_sweep("gguf-smollm2", "results/gguf-smollm2.jsonl", __doc__, argv)
    if "F16" in by:
        vs = by["F16"].quality.vs_baseline
        check(
            abs(vs.delta_ppl_pct) <= 0.1 and vs.kld_mean <= 1e-3,
            f"F16 vs HF fp32: Δppl {vs.delta_ppl_pct:+.4f}% (≤ 0.1%), KLD {vs.kld_mean:.2e} (≤ 1e-3)",
        )
    ladder = [t for t in LADDER if t in by]
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
