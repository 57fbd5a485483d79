"""What the quality benchmarks share: their common options (model, calibration, evaluation text, work dir,
results file), and making an artifact once and re-using it while its spec still matches."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_quality_args(parser: argparse.ArgumentParser, *, results: str) -> None:
    parser.add_argument("--model", default="default")
    parser.add_argument("--calib-dataset", default="default", help="calibration text (validation split)")
    parser.add_argument("--calib-samples", type=int, default=64)
    parser.add_argument("--calib-seq-len", type=int, default=512)
    parser.add_argument("--dataset", default="default", help="evaluation text (test split)")
    parser.add_argument("--max-tokens", type=int, default=16384)
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--results", type=Path, default=Path(results))


def calibration_from(args: argparse.Namespace):
    from quantlab.spec import Calibration

    return Calibration(dataset=args.calib_dataset, n_samples=args.calib_samples, seq_len=args.calib_seq_len)


def artifact_for(model: str, spec, out: Path):
    """The artifact at `out` if it was made from the same request, else a fresh one (replacing it)."""
    from quantlab.quantizer import quantize, reusable

    artifact = reusable(out, model, spec)
    if artifact is not None:
        return artifact
    print(f"quantizing {out.name} ...", flush=True)
    artifact = quantize(model, spec, out, force=True)
    print(f"{out.name}: {artifact.manifest.quantize_seconds:.0f} s to quantize", flush=True)
    return artifact
