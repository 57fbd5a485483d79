"""CPU stand-ins for torchao's CUDA-only schemes, so their quality can be measured on a host without a GPU.

int4wo's artifact is packed for tinygemm by a CUDA op and float8dq's config asserts FP8 hardware, so neither
can be made here (`quantize` refuses both). Their quality is a property of the quantized values, not of the
kernel that multiplies them, and torchao computes those values on a CPU too:

- int4wo: torchao's CPU int4 layout (`PrototypeInt4WeightOnlyConfig`, matmul `_weight_int4pack_mm_for_cpu`)
  runs the same tinygemm quantization (asymmetric, zero point in the float domain) as `tile_packed_to_4d`.
  `tinygemm_mismatches` checks that per layer, exactly: same integers, same scales and zeros.
- float8dq: the backend's own config, through the same transformers loading path, with only torchao's hardware
  assertion lifted. Weights and per-token activation scales are torchao's; the FP8 matmul is torch._scaled_mm's
  CPU path (an upcast and an fp32 matmul: benchmarks/crosschecks/cpu_fp8_matmul.py), where the GPU also sums in fp32.

These models are never saved: they are not artifacts, and whatever reports them says it ran a stand-in.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from quantlab.errors import SpecError
from quantlab.methods.torchao_backend import torchao_config
from quantlab.spec import MethodSpec, torch_dtype

STANDINS = {
    "int4wo": "torchao's CPU int4 layout (PrototypeInt4WeightOnlyConfig, aten::_weight_int4pack_mm_for_cpu), "
    "the same tinygemm integers, scales and zeros as tile_packed_to_4d",
    "float8dq": "torchao's float8dq config with its FP8-hardware assertion lifted; FP8 matmul by "
    "torch._scaled_mm on the CPU (upcast, fp32 sums)",
}
CPU_INT4_GROUPS = (32, 64, 128)  # the CPU layout's; tile_packed_to_4d also takes 256


@contextmanager
def _fp8_check_lifted():
    """torchao asserts FP8 tensor cores in the config handler only; quantizing and the linear itself run on CPU."""
    from unittest import mock

    import torchao.quantization.quant_api as quant_api

    with mock.patch.object(quant_api, "_check_hardware_support", lambda *args, **kwargs: None):
        yield


def standin_config(spec: MethodSpec):
    """The TorchAoConfig that makes `spec`'s values on a CPU (spec resolved by the torchao backend)."""
    from transformers import TorchAoConfig

    if spec.scheme == "int4wo":
        from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig

        if spec.group_size not in CPU_INT4_GROUPS:
            raise SpecError(
                f"the CPU stand-in for int4wo takes groups of {', '.join(map(str, CPU_INT4_GROUPS))}, "
                f"not {spec.group_size}"
            )
        return TorchAoConfig(quant_type=PrototypeInt4WeightOnlyConfig(group_size=spec.group_size))
    if spec.scheme == "float8dq":
        return torchao_config(spec)
    raise SpecError(f"torchao {spec.scheme} runs on a CPU as it is; it needs no stand-in")


def load_standin(source: Path, spec: MethodSpec):
    """`source` (a transformers checkpoint) quantized in memory on the CPU as `spec` would be on a GPU."""
    from transformers import AutoModelForCausalLM

    config = standin_config(spec)
    with _fp8_check_lifted():
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch_dtype(spec.dtype), quantization_config=config, device_map="cpu"
        )
    return model.eval()


def tinygemm_values(weight, group_size: int):
    """(integers, scales, zeros) [out, in], [out, groups] twice, as `Int4TilePackedTo4dTensor.from_hp` computes
    them: it pads the input width to a multiple of 1024 and the output width to one of 8 with zeros before
    choosing scales. That is repeated here and the padding cut off, so a difference it made would show."""
    import torch
    from torchao.quantization.quant_primitives import (
        MappingType,
        _choose_qparams_affine_tinygemm,
        _quantize_affine_tinygemm,
    )

    out_f, in_f = weight.shape
    padded = torch.nn.functional.pad(weight, (0, -in_f % 1024, 0, -out_f % 8))
    block = (1, group_size)
    scale, zero = _choose_qparams_affine_tinygemm(
        padded,
        MappingType.ASYMMETRIC,
        block,
        torch.int32,
        0,
        15,
        scale_dtype=weight.dtype,
        zero_point_dtype=weight.dtype,
    )
    ints = _quantize_affine_tinygemm(padded, block, scale, zero, torch.int32, 0, 15)[:out_f, :in_f]
    groups = in_f // group_size
    scale, zero = scale.reshape(padded.shape[0], -1), zero.reshape(padded.shape[0], -1)
    return ints.contiguous(), scale[:out_f, :groups], zero[:out_f, :groups]


def tinygemm_mismatches(dense, standin, group_size: int) -> tuple[int, list[str]]:
    """(layers compared, names of those whose int4 CPU weights differ from what tile_packed_to_4d stores)."""
    import torch
    from torchao.prototype.quantization.int4 import Int4OpaqueTensor
    from torchao.quantization.utils import pack_tinygemm_scales_and_zeros

    dense_weights = {name: m.weight for name, m in dense.named_modules() if isinstance(m, torch.nn.Linear)}
    compared, differ = 0, []
    for name, module in standin.named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, Int4OpaqueTensor):
            continue
        w = dense_weights[name].detach()
        ints, scale, zero = tinygemm_values(w, group_size)
        scale_zero = pack_tinygemm_scales_and_zeros(scale, zero, w.dtype)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(ints, 1)
        compared += 1
        if not (torch.equal(packed, weight.qdata) and torch.equal(scale_zero, weight.scale_and_zero)):
            differ.append(name)
    return compared, differ


def artifact_mismatches(model, source: Path, group_size: int | None, *, limit: int = 3) -> tuple[int, list[str]]:
    """(layers compared, names of those that differ): whether a real int4wo/float8dq artifact, loaded where it
    could be made (a GPU), holds the values the stand-ins compute from the same source weights.

    int4wo's packing has no unpacking API, so its weights are read back through its own kernel (identity × W):
    they must equal (q − 8) × scale + zero within bf16 rounding, far below one integer step. float8dq's must
    equal torchao's torch-path quantization bit for bit (a GPU with mslk quantizes with mslk's kernel instead,
    which this would show)."""
    import torch
    from safetensors import safe_open
    from torchao.quantization import Float8Tensor, PerRow
    from torchao.quantization.quantize_.common import KernelPreference

    sources = {}
    for file in sorted(source.glob("*.safetensors")):
        with safe_open(file, framework="pt") as fh:
            sources.update({key: file for key in fh.keys()})  # noqa: SIM118 - safe_open is not iterable
    compared, differ = 0, []
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        kind = type(weight).__name__
        if kind not in ("Int4TilePackedTo4dTensor", "Int4OpaqueTensor", "Float8Tensor") or compared == limit:
            continue
        with safe_open(sources[f"{name}.weight"], framework="pt", device=str(weight.device)) as fh:
            src = fh.get_tensor(f"{name}.weight").to(torch.bfloat16)
        compared += 1
        if kind == "Float8Tensor":
            want = Float8Tensor.from_hp(src, granularity=PerRow(), kernel_preference=KernelPreference.TORCH)
            same = torch.equal(want.qdata.view(torch.uint8), weight.qdata.view(torch.uint8))
            if not (same and torch.equal(want.scale, weight.scale)):
                differ.append(name)
            continue
        ints, scale, zero = tinygemm_values(src, group_size)
        expand = {"dim": 1, "sizes": (-1, group_size)}
        want = (ints - 8).float().unflatten(**expand) * scale.float()[..., None] + zero.float()[..., None]
        eye = torch.eye(src.shape[1], dtype=torch.bfloat16, device=src.device)
        with torch.inference_mode():
            got = torch.nn.functional.linear(eye, weight).T.float().unflatten(**expand)
        if ((got - want).abs() > want.abs() * 2**-7 + scale.float()[..., None] / 16).any():
            differ.append(name)
    return compared, differ
