"""FP8_DYNAMIC against bf16 on a GPU with FP8 tensor cores: prefill and decode tok/s, peak VRAM.

    python benchmarks/fp8_gpu.py --rig h200 --tokenizer DIR --work /tmp/fp8gpu [--shape llama-3.1-8b]
                                 [--batch-sizes 1,8,32] [--prompt 512] [--new 32] [--results FILE]

Speed and memory do not depend on the weights' values, so the model is a real-size architecture (default:
Llama-3.1-8B's shape) with random weights, built on the device; quality is measured on the real model on CPU
instead (benchmarks/fp_formats_quality.py). Both artifacts are made and measured by quantlab itself:
`quantize --method none --dtype bf16` and `quantize --method fp8 --scheme FP8_DYNAMIC`, then `bench --no-quality`
with the transformers runtime, which runs FP8_DYNAMIC through transformers' FP8 kernel path
(`use_optimized_inference`: FP8 weights, per-token FP8 activations, row-wise scaled matmul) where the GPU has
FP8 tensor cores, and says so in each result's kernel field. `--shape tiny` runs the same steps on CPU in a
minute, to check the script before spending device time.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

SHAPES = {
    "llama-3.1-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        rope_theta=500000.0,
        max_position_embeddings=8192,
    ),
    "tiny": dict(
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=49152,
        max_position_embeddings=2048,
    ),
}


def build_random_model(shape: str, tokenizer: Path, out: Path, device: str, layers: int | None = None) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    dims = {**SHAPES[shape], **({"num_hidden_layers": layers} if layers else {})}
    config = LlamaConfig(**dims, tie_word_embeddings=False, initializer_range=0.02, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tokenizer).save_pretrained(out)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama-3.1-8b")
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
    args = parser.parse_args()

    import torch

    from quantlab.bench import BenchConfig, bench
    from quantlab.quantizer import quantize
    from quantlab.report import markdown
    from quantlab.results import read_results
    from quantlab.spec import MethodSpec

    device = args.device or ("cuda:0" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        print(
            f"device: {torch.cuda.get_device_name(device)}, capability {torch.cuda.get_device_capability(device)}, "
            f"torch {torch.__version__}",
            flush=True,
        )
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    source = args.work / "source"

    def step(what: str, fn):
        started = time.perf_counter()
        print(f"{what} ...", flush=True)
        value = fn()
        print(f"{what}: {time.perf_counter() - started:.1f} s", flush=True)
        return value

    step(
        f"random {args.shape} (bf16) on {device}",
        lambda: build_random_model(args.shape, args.tokenizer, source, device),
    )
    bf16 = step(
        "quantize none bf16", lambda: quantize(str(source), MethodSpec(method="none", dtype="bf16"), args.work / "bf16")
    )
    shutil.rmtree(source)  # only the artifacts are needed from here on; keeps disk use at two models
    fp8 = step(
        "quantize fp8 FP8_DYNAMIC", lambda: quantize(str(bf16.path), MethodSpec(method="fp8"), args.work / "fp8")
    )
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
    step(
        "bench",
        lambda: bench(
            [bf16.path, fp8.path],
            config=options,
            results_path=args.results,
            progress=lambda msg: print(f"  {msg}", flush=True),
        ),
    )
    results = read_results(args.results)
    print(markdown(results))
    for result in results:
        print(
            f"{result.artifact.method} {result.artifact.label}: kernel {result.runtime.kernel}: "
            f"{result.runtime.kernel_detail}"
        )


if __name__ == "__main__":
    main()
