"""torchao's int8 schemes on the default model: quality against the fp32 baseline beside bf16 and RTN int8/int4
(llm-compressor) on the same token ids, size on disk, and the kernel each runs here.

    python -m benchmarks.sweeps.torchao_quality [--results FILE.jsonl] [--work-dir DIR] [--set speed=false]

The cells are benchmarks/sweeps/recipes/torchao-smollm2.yaml. Prints the report, then PASS/FAIL/INFO lines: each
int8 scheme far below RTN int4 in KLD, weight-only int8 losing no more than W8A8 (activations quantized too),
torchao int8 weight-only within noise of RTN int8 per channel (the same grid), and each artifact's kernel label.
"""

from __future__ import annotations

from benchmarks.lib.console import check
from benchmarks.lib.sweep import run_sweep


def main(argv: list[str] | None = None) -> None:
    by = run_sweep("torchao-smollm2", "results/torchao-smollm2.jsonl", __doc__, argv)

    def kld(name: str) -> float:
        return by[name].quality.vs_baseline.kld_mean

    for scheme in ("torchao-int8wo", "torchao-int8dq"):
        check(kld(scheme) < kld("rtn-w4") / 5, f"{scheme} KLD {kld(scheme):.5f} < rtn-w4 {kld('rtn-w4'):.5f} / 5")
    check(
        kld("torchao-int8wo") <= kld("torchao-int8dq"),
        f"int8 weight-only loses no more than W8A8: KLD {kld('torchao-int8wo'):.5f} ≤ {kld('torchao-int8dq'):.5f}",
    )
    check(
        None,
        f"torchao int8wo vs llm-compressor RTN w8 per channel: KLD {kld('torchao-int8wo'):.5f} vs {kld('rtn-w8'):.5f}",
    )
    for name, r in by.items():
        print(f"  {name}: {r.artifact.weight_bytes / 1e6:.1f} MB of weights, kernel {r.runtime.kernel}")


if __name__ == "__main__":
    main()
