"""FP8_DYNAMIC against bf16 on a GPU with FP8 tensor cores: prefill and decode tok/s, peak VRAM.

    python -m benchmarks.gpu.fp8_dynamic --rig h200 --tokenizer DIR --work /tmp/fp8gpu [--shape llama-3.1-8b]
        [--layers N] [--batch-sizes 1,8,32] [--prompt 512] [--new 32] [--results FILE]

Speed and memory do not depend on the weights' values, so the model is a real-size architecture (default:
Llama-3.1-8B's shape, all 32 layers) with random weights, built on the device (benchmarks/lib/random_model.py);
quality is measured on the real model on CPU instead (`python -m benchmarks.sweeps.fp_formats_quality`). Both
artifacts are made and measured by quantlab itself: `quantize --method none --dtype bf16` and `quantize --method
fp8 --scheme FP8_DYNAMIC`, then `bench --no-quality` with the transformers runtime, which runs FP8_DYNAMIC
through transformers' FP8 kernel path (`use_optimized_inference`: FP8 weights, per-token FP8 activations,
row-wise scaled matmul) where the GPU has FP8 tensor cores, and says so in each result's kernel field. The
records are quantlab Results appended to `--results`. `--shape tiny` runs the same steps on CPU in a minute, to
check the script before spending device time.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from benchmarks.lib.console import log, timed
from benchmarks.lib.random_model import SHAPES, build_random_model


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama-3.1-8b")
    parser.add_argument("--layers", type=int, default=None, help="layers of the shape to build (default: all)")
    parser.add_argument(
        "--tokenizer",
        type=Path,
        required=True,
        help="a tokenizer directory (any vocab ≤ the shape's): only its ids are used",
    )
    parser.add_argument("--work", type=Path, required=True, help="scratch directory for the models")
    parser.add_argument("--rig", default=None, help="rig name for $/1M (default: cpu on CPU)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--prompt", type=int, default=512)
    parser.add_argument("--new", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results", type=Path, default=Path("results/gpu/fp8_dynamic.jsonl"))
    return parser


def make_artifacts(args, device: str) -> tuple:
    """The random bf16 model, its `none` bf16 artifact and the FP8_DYNAMIC one made from that; the source model
    is deleted once the bf16 artifact exists, so the disk holds two models at most."""
    from quantlab.quantizer import obtain
    from quantlab.spec import MethodSpec

    source = args.work / "source"
    timed(
        f"random {args.shape} (bf16) on {device}",
        lambda: build_random_model(args.shape, args.tokenizer, source, device, layers=args.layers),
    )
    bf16 = timed(
        "quantize none bf16", lambda: obtain(str(source), MethodSpec(method="none", dtype="bf16"), args.work / "bf16")
    )
    shutil.rmtree(source)
    fp8 = timed("quantize fp8 FP8_DYNAMIC", lambda: obtain(str(bf16.path), MethodSpec(method="fp8"), args.work / "fp8"))
    return bf16, fp8


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    import torch

    from quantlab.bench import BenchConfig, bench
    from quantlab.report import markdown
    from quantlab.results import read_results

    device = args.device or ("cuda:0" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        name, capability = torch.cuda.get_device_name(device), torch.cuda.get_device_capability(device)
        log(f"device: {name}, capability {capability}, torch {torch.__version__}")
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    bf16, fp8 = make_artifacts(args, device)
    options = BenchConfig(
        dataset="embedded",
        quality=False,
        speed=True,
        device=device,
        rig=args.rig,
        batch_sizes=[int(b) for b in args.batch_sizes.split(",")],
        prompt_tokens=args.prompt,
        new_tokens=args.new,
        repeats=args.repeats,
    )
    args.results.parent.mkdir(parents=True, exist_ok=True)
    timed("bench", lambda: bench([bf16.path, fp8.path], config=options, results_path=args.results, progress=log))
    results = read_results(args.results)
    print(markdown(results))
    for result in results:
        print(
            f"{result.artifact.method} {result.artifact.label}: kernel {result.runtime.kernel}: "
            f"{result.runtime.kernel_detail}"
        )


if __name__ == "__main__":
    main()
