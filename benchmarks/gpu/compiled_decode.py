"""Eager vs compiled decode on a GPU, bf16 against every low-bit path, with the bandwidth limit and where the
time goes, in one run.

    python -m benchmarks.gpu.compiled_decode --tokenizer DIR --work /tmp/gpuc [--shape llama-3.1-8b] [--layers 8]
        [--methods bf16,fp8,rtn-w4,rtn-w4-gemlite,rtn-w8-gemlite,bnb-nf4,...] [--batch-sizes 1,8,32]
        [--prompt 512] [--new 64] [--rig h200] [--results results/gpu/compiled_h200.jsonl]

Speed does not depend on the weights' values: the model is Llama-3.1-8B's shape with `--layers` of its 32 layers
and random weights, built on the device (benchmarks/lib/random_model.py). Every artifact is made by `quantlab
quantize` from the bf16 one and measured by `quantlab bench --no-quality`, once with the eager loop
(`--no-compile`) and once compiled (`--compile`: static cache + torch.compile with CUDA graphs; a model that
graph-breaks runs eager and its record says why). Each record (a quantlab Result, appended to `--results`)
carries its kernel label (ops the first forward ran), the roofline (% of the bandwidth quantlab measured on this
device, batch 1) and the profile of its batch-1 decode steps.

Rows named `-gemlite` bench the artifact of the row before them again with `--kernel gemlite` (gemlite's Triton
kernels on the checkpoint's integers, repacked at load; `pip install gemlite`).

Prints one row per artifact and PASS/FAIL/INFO lines for the GPU targets of compiled decoding: compiled bf16 ≥ 2×
eager and ≥ 40% of the bandwidth limit; a 4-bit path ≥ 1.3× and an 8-bit path ≥ 1.1× compiled bf16 at batch 1.
The torchao int4wo and float8dq artifacts are also checked to hold the values their CPU stand-ins were scored
with. A scheme this device cannot run is reported as refused, not failed. `--shape tiny` runs every step on a CPU
in minutes, to check the script before spending device time (the CUDA-only schemes are then refused: that is
expected). How to carry it to a lent GPU: benchmarks/gpu/compiled_decode.md.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from benchmarks.lib.console import check, log
from benchmarks.lib.random_model import SHAPES, build_random_model

RTN_W4 = {"method": "rtn", "bits": 4, "group_size": 128}
RTN_W8 = {"method": "rtn", "bits": 8, "group_size": -1}
# name: (quantize spec, weight bits, --kernel): a --kernel row benches the artifact of the row before it again
METHODS = {
    "bf16": ({"method": "none", "dtype": "bf16"}, None, None),
    "fp8": ({"method": "fp8", "scheme": "FP8_DYNAMIC"}, 8, None),
    "fp8-gemlite": ({"method": "fp8", "scheme": "FP8_DYNAMIC"}, 8, "gemlite"),
    "rtn-w4": (RTN_W4, 4, None),
    "rtn-w4-gemlite": (RTN_W4, 4, "gemlite"),
    "rtn-w8-gemlite": (RTN_W8, 8, "gemlite"),
    "bnb-nf4": ({"method": "bnb", "scheme": "nf4"}, 4, None),
    "torchao-int4wo": ({"method": "torchao", "scheme": "int4wo"}, 4, None),
    "torchao-int8wo": ({"method": "torchao", "scheme": "int8wo"}, 8, None),
    "torchao-int8dq": ({"method": "torchao", "scheme": "int8dq"}, 8, None),
    "torchao-float8dq": ({"method": "torchao", "scheme": "float8dq"}, 8, None),
}
TARGETS = ((4, 1.3), (8, 1.1))  # weight bits → batch-1 decode over compiled bf16


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama-3.1-8b")
    parser.add_argument("--layers", type=int, default=8, help="layers of the shape to build (speed is per layer)")
    parser.add_argument("--tokenizer", type=Path, required=True, help="any tokenizer directory: only ids are used")
    parser.add_argument("--work", type=Path, required=True, help="scratch directory for the artifacts")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--prompt", type=int, default=512)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rig", default=None, help="rig name for $/1M (default: cpu on a CPU)")
    parser.add_argument("--results", type=Path, default=Path("results/gpu/compiled.jsonl"))
    return parser


def decode_at(record, batch: int) -> float | None:
    point = next((p for p in record.speed if p.batch_size == batch), None) if record else None
    return point.decode_tok_s.median if point else None


def row(name: str, eager, compiled, batches: list[int], bf16_compiled: float | None) -> str:
    from quantlab.report.notes import op_name

    top = compiled.runtime.decode.profile if compiled and compiled.runtime.decode else []
    loop = compiled.runtime.decode.mode if compiled and compiled.runtime.decode else "–"
    b1 = decode_at(compiled, 1)
    cells = [
        name,
        f"{eager.runtime.kernel}" if eager else "–",
        f"{decode_at(eager, 1) or 0:.0f}",
        *(f"{decode_at(compiled, b) or 0:.0f}" for b in batches),
        loop,
        f"{compiled.roofline.pct_of_limit:.0f}" if compiled and compiled.roofline else "–",
        f"{b1 / bf16_compiled:.2f}×" if b1 and bf16_compiled else "–",
        "; ".join(f"{op_name(o.op)[:40]} {o.share:.0%}" for o in top[:3]) or "–",
    ]
    return "| " + " | ".join(cells) + " |"


def standin_check(name: str, made, source: Path, device: str) -> None:
    """torchao int4wo/float8dq quality was measured on a CPU through stand-ins
    (`python -m benchmarks.sweeps.torchao_cuda_quality`): here, where the real artifacts can be made, check that
    they hold the same values."""
    spec = made.manifest.spec
    if spec.method != "torchao" or spec.scheme not in ("int4wo", "float8dq"):
        return
    import torch
    from transformers import AutoModelForCausalLM

    from quantlab.errors import exception_line
    from quantlab.methods.torchao_standin import artifact_mismatches

    try:
        model = AutoModelForCausalLM.from_pretrained(made.path, device_map=device)
        compared, differ = artifact_mismatches(model, source, spec.group_size)
    except Exception as exc:  # a report line, not a crash: the speed rows still run
        check(False, f"{name}: reading its values back failed: {exception_line(exc)}")
        return
    del model
    torch.cuda.empty_cache()
    check(
        compared > 0 and not differ,
        f"{name}: the artifact holds the values its CPU stand-in was scored with on {compared - len(differ)} of "
        f"{compared} layers checked" + (f" (differ: {', '.join(differ)})" if differ else ""),
    )


def quantized(name: str, source: Path, work: Path, device: str):
    """The artifact of row `name` made from the random model, or None (an INFO line) where this device refuses
    the scheme; the torchao CUDA schemes are checked against their stand-ins' values on the way."""
    from quantlab.errors import QuantlabError
    from quantlab.quantizer import obtain
    from quantlab.spec import MethodSpec

    log(f"{name}: quantize")
    try:
        made = obtain(str(source), MethodSpec(**METHODS[name][0]), work / name)
    except QuantlabError as exc:
        check(None, f"{name}: refused on this device: {exc}")
        return None
    standin_check(name, made, source, device)
    return made


def eager_and_compiled(name: str, made, args, device: str) -> tuple:
    """The eager record and the compiled one of one row (None where its bench failed, with a FAIL line)."""
    from quantlab.bench import BenchConfig, bench
    from quantlab.errors import QuantlabError

    kernel, pair = METHODS[name][2], []
    for compiled in (False, True):
        log(f"{name}: bench {'compiled' if compiled else 'eager'}" + (f", --kernel {kernel}" if kernel else ""))
        config = BenchConfig(
            dataset="embedded", quality=False, device=device, rig=args.rig, compile=compiled, profile=True,
            batch_sizes=[int(b) for b in args.batch_sizes.split(",")], prompt_tokens=args.prompt,
            new_tokens=args.new, repeats=args.repeats, kernel=kernel,
        )  # fmt: skip
        try:
            [record] = bench([made.path], config=config, results_path=args.results, progress=log)
        except QuantlabError as exc:
            check(False, f"{name}: bench failed: {exc}")
            record = None
        pair.append(record)
    return tuple(pair)


def measure_rows(args, source: Path, device: str) -> dict[str, tuple]:
    """Row name → (eager record, compiled record). One quantized model on disk at a time; a `--kernel` row reuses
    the artifact of the row before it."""
    from quantlab.runtimes.transformers_rt import TransformersRuntime

    measured: dict[str, tuple] = {}
    made = made_fields = None
    for name in args.methods.split(","):
        fields, _, kernel = METHODS[name]
        if made_fields != fields:
            if made is not None:
                shutil.rmtree(made.path, ignore_errors=True)
            made_fields, made = fields, quantized(name, source, args.work, device)
        if made is None:
            continue
        problem = kernel and TransformersRuntime().kernel_problem(made, kernel, device)
        if problem:
            check(None, f"{name}: refused on this device: {problem}")
            continue
        measured[name] = eager_and_compiled(name, made, args, device)
    return measured


def print_table(measured: dict[str, tuple], batches: list[int], base: float | None) -> None:
    header = ["artifact", "kernel", "eager b1", *(f"compiled b{b}" for b in batches), "loop ran", "% BW limit b1"]
    print("| " + " | ".join([*header, "vs compiled bf16 b1", "top decode ops (compiled, b1)"]) + " |")
    print("|" + "---|" * (len(header) + 2))
    for name, (eager, compiled) in measured.items():
        print(row(name, eager, compiled, batches, base))


def check_targets(measured: dict[str, tuple]) -> None:
    bf16_eager, bf16_compiled = measured.get("bf16", (None, None))
    base = decode_at(bf16_compiled, 1)
    if base and decode_at(bf16_eager, 1):
        ratio = base / decode_at(bf16_eager, 1)
        check(ratio >= 2, f"compiled bf16 batch-1 decode {ratio:.2f}× eager (target ≥ 2×)")
        pct = bf16_compiled.roofline.pct_of_limit if bf16_compiled.roofline else None
        check(pct is not None and pct >= 40, f"compiled bf16 at {pct or 0:.0f}% of the bandwidth limit (≥ 40%)")
    for bits, target in TARGETS:
        ratios = {
            n: decode_at(c, 1) / base
            for n, (_, c) in measured.items()
            if METHODS[n][1] == bits and c and base and decode_at(c, 1)
        }
        best = max(ratios, key=ratios.get) if ratios else None
        check(
            bool(best) and ratios[best] >= target,
            f"best {bits}-bit path at batch 1: {best} {ratios.get(best, 0):.2f}× compiled bf16 (target ≥ {target}×)",
        )


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    unknown = [name for name in args.methods.split(",") if name not in METHODS]
    if unknown:
        parser().error(f"unknown method {unknown[0]!r}; methods: {', '.join(METHODS)}")
    import torch

    from quantlab.report.render import write_report
    from quantlab.report.selection import select
    from quantlab.results import read_results

    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    log(f"device {torch.cuda.get_device_name(device) if device != 'cpu' else 'cpu'}, torch {torch.__version__}")
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    source = args.work / "source"
    log(f"building a random {args.shape} with {args.layers} layers on {device}")
    build_random_model(args.shape, args.tokenizer, source, device, layers=args.layers)
    measured = measure_rows(args, source, device)
    write_report(select(read_results(args.results)), args.results)
    batches = [int(b) for b in args.batch_sizes.split(",")]
    print_table(measured, batches, decode_at(measured.get("bf16", (None, None))[1], 1))
    check_targets(measured)


if __name__ == "__main__":
    main()
