"""`--kernel gemlite`: a compressed-tensors checkpoint's quantized weights multiplied by gemlite's Triton kernels.

Why: transformers runs a compressed-tensors w4a16 checkpoint (quantlab's rtn, gptq and awq artifacts) by
decompressing it to bf16, so on a GPU it reads bf16 bytes and is slower than bf16 (H200, DESIGN.md: rtn w4 115
tok/s eager and 55 compiled, against bf16's 170 and about 400); its FP8 kernel path graph-breaks (FP8_DYNAMIC 56
eager, 38 compiled). vLLM runs the same files through Marlin and fused FP8 kernels. In process, the low-bit
kernels that install anywhere CUDA and Triton do are gemlite's (PyPI, Triton only, no build step; torchao and
SGLang use it for 4-bit): GEMV and split-K GEMM on packed weights, custom ops that torch.compile keeps whole.

The artifact is not changed. When the model loads, each quantized linear's stored weights and scales are handed
to a gemlite layer in place of that linear, so the kernel multiplies exactly the checkpoint's weights; only the
matmul (and its accumulation order) differs.

- int4/int8 weight-only (pack-quantized): compressed-tensors stores signed integers q in [-2^(b-1), 2^(b-1))
  (zero points likewise) and dequantizes (q - zp) * scale; gemlite computes (W_q - zero) * scale over unsigned
  W_q. So W_q = q + 2^(b-1) and zero = zp + 2^(b-1), with zp = 0 for a symmetric checkpoint: the same numbers.
- FP8 weights with per-channel (or per-tensor) scales: handed over as stored. FP8_DYNAMIC (per-token FP8
  activations) runs gemlite's A8W8 FP8 kernel, which quantizes activations per token too (FP8 tensor cores,
  compute capability ≥ 8.9); FP8_W8A16 its A16W8 kernel.

Importing gemlite queries the GPU, so every check here runs from config.json, before gemlite is imported or a
weight loads.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

from quantlab.env import fp8_hardware
from quantlab.errors import BenchError, exception_line

KERNELS = ("gemlite",)
GEMLITE_OP = "gemlite::forward_functional"  # the custom op every gemlite layer's forward calls


def problem(quant_config: dict | None, device: str) -> str | None:
    """Why `--kernel gemlite` cannot run this checkpoint on `device`; None when it can. The format first (a
    checkpoint it can never run), then the device and the package. An unquantized model has nothing for the kernel
    to do and runs dense (the record then names no kernel option)."""
    groups = []
    if quant_config:
        why = _format_problem(quant_config)
        if why:
            return f"--kernel gemlite: {why}"
        groups = list(quant_config["config_groups"].values())
    if not device.startswith("cuda"):
        return f"--kernel gemlite runs Triton GPU kernels; it cannot run on {device} (needs a CUDA device)"
    import torch

    if not torch.cuda.is_available():
        return "--kernel gemlite runs Triton GPU kernels; this host has no CUDA GPU"
    if any(group.get("input_activations") for group in groups) and not fp8_hardware(device):
        return "--kernel gemlite: FP8 activations need FP8 tensor cores (compute capability ≥ 8.9)"
    if importlib.util.find_spec("gemlite") is None:
        return "--kernel gemlite needs the gemlite package (pip install gemlite)"
    return None


def _format_problem(quant_config: dict) -> str | None:
    if quant_config.get("quant_method") != "compressed-tensors":
        return f"it takes compressed-tensors checkpoints; this one is {quant_config.get('quant_method')}"
    groups = list((quant_config.get("config_groups") or {}).values())
    if not groups:
        return "the checkpoint names no quantization groups"
    return next((why for why in map(_group_problem, groups) if why), None)


def _group_problem(group: dict) -> str | None:
    weights, acts = group.get("weights") or {}, group.get("input_activations")
    kind, bits, strategy = weights.get("type"), weights.get("num_bits"), weights.get("strategy")
    if kind == "float" and bits == 8:
        if strategy not in ("channel", "tensor"):
            return f"FP8 weights scaled per {strategy}; gemlite's FP8 path here takes channel or tensor scales"
        if acts and not (acts.get("type") == "float" and acts.get("dynamic") and acts.get("strategy") == "token"):
            return "FP8 activations other than dynamic per-token ones are not supported"
        return None
    if acts:
        return "integer weights with quantized activations (W8A8) are not supported; weight-only int4/int8 are"
    if kind != "int" or bits not in (4, 8):
        return f"weights are {kind}{bits}; gemlite's paths here take int4, int8 or FP8"
    if strategy not in ("group", "channel"):
        return f"weights are scaled per {strategy}; gemlite takes groups or channels"
    if weights.get("actorder") == "group":
        return "activation-ordered groups (a g_idx per column) are not supported; quantize with actorder static"
    if (group.get("format") or "pack-quantized") != "pack-quantized":
        return f"format {group.get('format')} is not pack-quantized"
    return None


def unpacked(module):
    """(W_q uint8 [out, in], scales [out, groups], zeros [out, groups], bits, group size) of a compressed-tensors
    pack-quantized linear, in gemlite's (W_q - zero) * scale convention (see the module)."""
    import torch
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32

    args = module.quantization_scheme.weights
    bits = args.num_bits
    shape = torch.Size(int(s) for s in module.weight_shape.tolist())
    offset = 1 << (bits - 1)
    q = unpack_from_int32(module.weight_packed, bits, shape)
    scales = module.weight_scale.reshape(shape[0], -1)
    zp = getattr(module, "weight_zero_point", None)
    if zp is not None and zp.numel():
        zp = unpack_from_int32(zp, bits, torch.Size((shape[0], scales.shape[1])), packed_dim=0)
        zeros = zp.to(torch.int16) + offset
    else:
        zeros = torch.full_like(scales, offset, dtype=torch.int16)
    group = shape[1] // scales.shape[1]
    return (q.to(torch.int16) + offset).to(torch.uint8), scales, zeros.to(scales.dtype), bits, group


def fp8_weights(module):
    """(FP8 weight [out, in], one scale per output row [out, 1]) of a compressed-tensors FP8 linear, as stored."""
    weight = module.weight.data
    return weight, module.weight_scale.data.reshape(-1, 1).expand(weight.shape[0], 1)


def describe(module) -> str:
    """What gemlite layer a quantized linear becomes, for the kernel label."""
    weights, acts = module.quantization_scheme.weights, module.quantization_scheme.input_activations
    if weights.type == "float":
        return "A8W8 FP8, per-token FP8 activations" if acts is not None else "A16W8 FP8 weight-only"
    groups = f"groups of {weights.group_size}" if weights.group_size else "per channel"
    return f"A16W{weights.num_bits} int{weights.num_bits}, {groups}"


def gemlite_layer(module, device: str, dtype):
    """The gemlite layer computing `module`'s matmul from its stored weights (CUDA only)."""
    from gemlite.helper import A16W8_FP8, A8W8_fp8_dynamic, A16Wn

    bias = module.bias.data if module.bias is not None else None
    if not hasattr(module, "weight_packed"):  # FP8
        weight, scales = fp8_weights(module)
        fp8 = A8W8_fp8_dynamic if module.quantization_scheme.input_activations is not None else A16W8_FP8
        return fp8(device=device, dtype=dtype).from_weights(weight, bias=bias, scales=scales.contiguous())
    w_q, scales, zeros, bits, group = unpacked(module)
    return A16Wn(device=device, dtype=dtype).from_weights(w_q, scales, zeros, W_nbits=bits, group_size=group, bias=bias)


def repack(model, device: str, make_layer: Callable | None = None) -> tuple[int, str]:
    """Replace every compressed-tensors quantized linear of `model` (loaded, not yet run) by a gemlite layer;
    (modules replaced, what they became). `make_layer(module, device, dtype)` defaults to `gemlite_layer`."""
    import torch

    make_layer = make_layer or gemlite_layer
    targets = [(name, m) for name, m in model.named_modules() if getattr(m, "quantization_scheme", None) is not None]
    stored = [m for _, m in targets if hasattr(m, "weight_packed") or m.weight.dtype == torch.float8_e4m3fn]
    if not targets or len(stored) < len(targets):
        raise BenchError("--kernel gemlite: the checkpoint's quantized weights were already decompressed")
    kinds = sorted({describe(m) for _, m in targets})
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        try:
            layer = make_layer(module, device, model.dtype)
        except Exception as exc:  # gemlite refuses a shape, or cannot build for this GPU / Triton
            raise BenchError(f"--kernel gemlite could not repack {name}: {exception_line(exc)}") from exc
        setattr(parent, child, layer)
    # compressed-tensors decompresses on the model's first forward (a pre-hook); nothing is left to decompress
    hook = getattr(model, "ct_decompress_hook", None)
    if hook is not None:
        hook.remove()
        del model.ct_decompress_hook
    return len(targets), "; ".join(kinds)
