"""What matmul a loaded transformers model really runs, named from its modules and the ops a forward ran.

A format's name says little: the same compressed-tensors file runs decompressed in transformers and through Marlin
in vLLM; bitsandbytes picks its kernel per call; torchao's tensor subclasses per layout. The transformers runtime
labels every record with what this module finds, never with what the format is supposed to do.
"""

from __future__ import annotations

from collections import Counter

from quantlab.results import Kernel
from quantlab.runtimes.gemlite_kernels import GEMLITE_OP
from quantlab.spec import dtype_short

# GPTQModel quantized-linear classes whose forward runs a low-bit kernel on the packed weights (CUDA ones by
# their documented design; the CPU one, TorchAten*, only once switched to inference mode, checked below).
_NATIVE_GPTQMODEL = ("Marlin", "Machete", "Exllama", "Triton", "AwqGEMM", "AwqGEMV", "Bitblas")


def _gptqmodel_kernel(module, dtype: str) -> tuple[Kernel, str]:
    name = type(module).__name__
    if name.startswith("TorchAten"):
        if getattr(module, "linear_mode", None) == "inference":
            return "native", (
                f"gptqmodel {name}: aten::_weight_int4pack_mm_for_cpu on packed int4 weights, activations cast to bf16"
            )
        return "dequantized", f"gptqmodel {name} (training mode): weights dequantized to {dtype} every forward"
    if name in ("TorchLinear", "AwqTorchLinear", "TorchQuantLinear"):
        return "dequantized", f"gptqmodel {name}: weights dequantized to {dtype} in every forward, dense matmul"
    if any(tag in name for tag in _NATIVE_GPTQMODEL):
        return "native", f"gptqmodel {name}: low-bit kernel (not verified by quantlab on this device)"
    return "unknown", f"gptqmodel {name}"


def native_fp8_eligible(quant_config: dict | None) -> bool:
    """Whether transformers' FP8 kernel path (`use_optimized_inference`) computes exactly this checkpoint's
    scheme: FP8 weights with per-channel or per-tensor scales AND FP8 activations. That path always quantizes
    activations per token and reads one scale per output row, so a weight-only FP8 checkpoint would silently
    become W8A8 and a block-scaled one would be misread: those stay on the compressed-tensors route."""
    if not quant_config or quant_config.get("quant_method") != "compressed-tensors":
        return False
    groups = list((quant_config.get("config_groups") or {}).values())
    if not groups:
        return False
    for group in groups:
        weights, acts = group.get("weights") or {}, group.get("input_activations") or {}
        if not (
            weights.get("type") == "float"
            and weights.get("num_bits") == 8
            and weights.get("strategy") in ("channel", "tensor")
            and acts.get("type") == "float"
            and acts.get("num_bits") == 8
        ):
            return False
    return True


def _args_text(args) -> str:
    kind = "FP" if args.type == "float" else "INT"
    return f"{kind}{args.num_bits} per {args.strategy}" + (f" of {args.group_size}" if args.group_size else "")


def _bnb_kernel(modules: list, device: str, ops: set[str]) -> tuple[Kernel, str]:
    """bitsandbytes chooses its kernel per call; name what it does for the shapes quantlab measures."""
    name = type(modules[0]).__name__
    if name == "Linear8bitLt":
        if device.startswith("cuda") or "aten::_int_mm" in ops:
            return "native", (
                f"bitsandbytes LLM.int8 ({len(modules)} modules): int8 matmul on int8 weights and "
                "per-token int8 activations, fp16 matmul for outlier columns (|x| > 6)"
            )
        return "dequantized", f"bitsandbytes LLM.int8 ({len(modules)} modules): int8 weights dequantized, dense matmul"
    state = modules[0].weight.quant_state
    fmt = f"{getattr(state, 'quant_type', '4-bit')} weights"
    compute = dtype_short(modules[0].compute_dtype) if modules[0].compute_dtype is not None else "input dtype"
    if device == "cpu":
        if all(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in modules):
            return "native", (
                f"bitsandbytes CPU 4-bit kernel (gemv_4bit, AVX512-BF16) on repacked {fmt}, bf16 "
                f"activations ({len(modules)} modules)"
            )
        return "dequantized", (
            f"bitsandbytes: {fmt} dequantized to {compute} on every forward, dense matmul ({len(modules)} modules)"
        )
    return "mixed", (
        f"bitsandbytes: fused 4-bit gemv kernel on {fmt} for single-token steps at batch 1 (decode); "
        f"prefill and larger batches dequantize to {compute} and multiply densely ({len(modules)} "
        "modules)"
    )


def _torchao_kernel(linears: list, dtype: str, ops: set[str]) -> tuple[Kernel, str]:
    """torchao's tensor subclasses pick their matmul per layout; the ops the first forward ran say which."""
    kinds = Counter(type(m.weight).__name__ for m in linears if type(m.weight).__name__ != "Parameter")
    if not kinds:
        return "unknown", "torchao: no quantized weights recognised"
    name, count = kinds.most_common(1)[0]
    found = f"torchao {name} ({count} modules)"
    if "aten::_int_mm" in ops:
        return "native", f"{found}: activations quantized to int8 per token, int8×int8 matmul (aten::_int_mm)"
    if "aten::_weight_int4pack_mm" in ops:
        return "native", f"{found}: int4 weights, tinygemm kernel (aten::_weight_int4pack_mm)"
    if "aten::_scaled_mm" in ops:
        return (
            "native",
            f"{found}: FP8 weights and per-token FP8 activations, row-wise scaled matmul (aten::_scaled_mm)",
        )
    if name == "Int8Tensor":
        return "dequantized", (
            f"{found}: int8 weights cast to {dtype} in every forward, dense matmul, rescaled per channel (inductor "
            "can fuse the cast into the matmul when the model is compiled)"
        )
    return "unknown", f"{found}: no low-bit kernel among the ops the first forward ran"


def kernel_path(
    model, quant_config: dict | None, device: str = "cpu", ops: set[str] | None = None
) -> tuple[Kernel, str]:
    """Name the matmul path from the modules actually loaded (after a forward) and the ops that forward ran,
    not from the format's name."""
    import torch

    dtype = dtype_short(model.dtype)
    if not quant_config:
        return "dense", f"dense {dtype} matmul (torch)"
    method = quant_config.get("quant_method", "unknown")
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if method == "bitsandbytes":
        quantized = [m for m in linears if type(m).__name__ in ("Linear4bit", "Linear8bitLt")]
        if not quantized:
            return "unknown", "bitsandbytes: no quantized modules recognised"
        return _bnb_kernel(quantized, device, ops or set())
    if method == "compressed-tensors":
        native = [m for m in linears if type(m).__name__ == "CompressedTensorsFP8Linear"]
        if native:
            return "native", (
                f"transformers CompressedTensorsFP8Linear ({len(native)} modules): FP8 weights, "
                "activations quantized to FP8 per token, row-wise scaled FP8 matmul "
                "(torch scaled_mm → cuBLASLt)"
            )
        # compressed-tensors replaces `forward` on the instance with a quantize-dequantize wrapper; its
        # per-call overhead is part of what this path costs, so say it is there.
        wrapped = sum("forward" in vars(m) for m in linears)
        wrapper = f"; compressed-tensors forward wrapper on {wrapped} modules" if wrapped else ""
        acts = {
            _args_text(m.quantization_scheme.input_activations)
            for m in linears
            if getattr(getattr(m, "quantization_scheme", None), "input_activations", None) is not None
        }
        if acts:
            return "emulated", (
                f"compressed-tensors: weights decompressed to {dtype}; activations quantized and "
                f"dequantized in software ({', '.join(sorted(acts))}) before a dense {dtype} "
                f"matmul{wrapper}"
            )
        if any(type(m).__name__ == "CompressedLinear" for m in linears):
            return "dequantized", (
                f"compressed-tensors CompressedLinear: weights decompressed to {dtype} on "
                f"every forward, dense matmul{wrapper}"
            )
        if any("weight_packed" in name for name, _ in model.named_parameters()):
            return "dequantized", f"compressed-tensors packed weights, {dtype} matmul{wrapper}"
        return "dequantized", f"compressed-tensors weights decompressed to {dtype} at load; dense matmul{wrapper}"
    if method == "torchao":
        return _torchao_kernel(linears, dtype, ops or set())
    quantized = [m for m in model.modules() if hasattr(m, "qweight")]
    if quantized:
        found = Counter(_gptqmodel_kernel(m, dtype) for m in quantized)
        (kernel, detail), count = found.most_common(1)[0]
        if len(found) > 1:
            return "unknown", "mixed kernels: " + "; ".join(f"{n}× {d}" for (_, d), n in found.items())
        return kernel, f"{detail} ({count} modules)"
    return "unknown", f"{method}: no quantized modules recognised"


def gemlite_kernel(repacked: tuple[int, str], ops: set[str]) -> tuple[Kernel, str]:
    """`--kernel gemlite`: native only if the first forward called gemlite's op."""
    count, kinds = repacked
    found = f"gemlite {kinds} ({count} modules), weights handed over at load from compressed-tensors"
    if GEMLITE_OP in ops:
        return "native", f"{found}; Triton GEMV (small batches) and split-K GEMM kernels on the stored weights"
    return "unknown", f"{found}; the first forward never called {GEMLITE_OP}"
