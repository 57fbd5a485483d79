"""`--kernel gemlite`: a compressed-tensors checkpoint's integer weights multiplied by gemlite's Triton kernels.

Why: transformers runs a compressed-tensors w4a16 checkpoint (quantlab's rtn, gptq and awq artifacts) by
decompressing it to bf16, so on a GPU it reads bf16 bytes and is slower than bf16 (H200, DESIGN.md: rtn w4 115
tok/s eager and 55 compiled, against bf16's 170 and about 400). vLLM runs the same files through Marlin. In
process, the low-bit kernel that installs anywhere CUDA and Triton do is gemlite (PyPI, Triton only, no build
step; torchao and SGLang use it for 4-bit): its GEMV and split-K GEMM read the packed weights.

The artifact is not changed. When the model loads, each quantized linear's integers, scales and zero points are
unpacked from compressed-tensors' int32 packing and packed into a gemlite layer in place of that linear, so the
kernel multiplies exactly the checkpoint's weights; only the matmul (and its accumulation order) differs.

Layout: compressed-tensors stores signed integers q in [-2^(b-1), 2^(b-1)) (zero points likewise) and dequantizes
(q - zp) * scale; gemlite computes (W_q - zero) * scale over unsigned W_q. So W_q = q + 2^(b-1) and
zero = zp + 2^(b-1), with zp = 0 for a symmetric checkpoint: the same numbers.

Importing gemlite queries the GPU, so every check here runs from config.json, before gemlite is imported or a
weight loads.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

from quantlab.errors import BenchError

KERNELS = ("gemlite",)
GEMLITE_OP = "gemlite::forward_functional"  # the custom op every gemlite layer's forward calls


def problem(quant_config: dict | None, device: str) -> str | None:
    """Why `--kernel gemlite` cannot run this checkpoint on `device`; None when it can. The format first (a
    checkpoint it can never run), then the device and the package. An unquantized model has nothing for the kernel
    to do and runs dense (the record then names no kernel option)."""
    if quant_config:
        why = _format_problem(quant_config)
        if why:
            return f"--kernel gemlite: {why}"
    if not device.startswith("cuda"):
        return f"--kernel gemlite runs Triton GPU kernels; it cannot run on {device} (needs a CUDA device)"
    import torch

    if not torch.cuda.is_available():
        return "--kernel gemlite runs Triton GPU kernels; this host has no CUDA GPU"
    if importlib.util.find_spec("gemlite") is None:
        return "--kernel gemlite needs the gemlite package (pip install gemlite)"
    return None


def _format_problem(quant_config: dict) -> str | None:
    if quant_config.get("quant_method") != "compressed-tensors":
        return f"it repacks compressed-tensors integer weights; this checkpoint is {quant_config.get('quant_method')}"
    groups = list((quant_config.get("config_groups") or {}).values())
    if not groups:
        return "the checkpoint names no quantization groups"
    return next((why for why in map(_group_problem, groups) if why), None)


def _group_problem(group: dict) -> str | None:
    weights = group.get("weights") or {}
    if group.get("input_activations"):
        return "this checkpoint quantizes activations too; gemlite's path here is weight-only (w4a16, w8a16)"
    if weights.get("type") != "int" or weights.get("num_bits") not in (4, 8):
        return f"weights are {weights.get('type')}{weights.get('num_bits')}; gemlite's path here takes int4 or int8"
    if weights.get("strategy") not in ("group", "channel"):
        return f"weights are scaled per {weights.get('strategy')}; gemlite takes groups or channels"
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


def gemlite_layer(module, device: str, dtype):
    """The gemlite layer computing `module`'s matmul from its packed integers (CUDA only)."""
    from gemlite.helper import A16Wn

    w_q, scales, zeros, bits, group = unpacked(module)
    bias = module.bias.data if module.bias is not None else None
    return A16Wn(device=device, dtype=dtype).from_weights(w_q, scales, zeros, W_nbits=bits, group_size=group, bias=bias)


def repack(model, device: str, make_layer: Callable | None = None) -> tuple[int, int, int]:
    """Replace every compressed-tensors quantized linear of `model` (loaded, not yet run) by a gemlite layer;
    (modules replaced, bits, group size), -1 where the modules differ. `make_layer(module, device, dtype)`
    defaults to `gemlite_layer`."""
    make_layer = make_layer or gemlite_layer
    targets = [(name, m) for name, m in model.named_modules() if hasattr(m, "weight_packed")]
    if not targets:
        raise ValueError("no compressed-tensors packed weights to repack (already decompressed?)")
    kinds = set()
    for name, module in targets:
        w = module.quantization_scheme.weights
        kinds.add((w.num_bits, w.group_size or int(module.weight_shape[1])))
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        try:
            layer = make_layer(module, device, model.dtype)
        except Exception as exc:  # gemlite refuses a shape, or cannot build for this GPU / Triton
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            raise BenchError(f"--kernel gemlite could not repack {name}: {type(exc).__name__}: {first}") from exc
        setattr(parent, child, layer)
    # compressed-tensors decompresses on the model's first forward (a pre-hook); nothing is left to decompress
    hook = getattr(model, "ct_decompress_hook", None)
    if hook is not None:
        hook.remove()
        del model.ct_decompress_hook
    bits, groups = {b for b, _ in kinds}, {g for _, g in kinds}
    return len(targets), bits.pop() if len(bits) == 1 else -1, groups.pop() if len(groups) == 1 else -1
