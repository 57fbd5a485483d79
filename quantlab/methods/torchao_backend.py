"""`torchao`: PyTorch-native int8, int4 and float8 through transformers' `TorchAoConfig`.

torchao quantizes as the weights load, into tensor subclasses whose matmul calls the kernel of their layout;
`save_pretrained` writes them as safetensors with torchao's metadata, and `from_pretrained` (transformers) and
vLLM read them back. Data-free. The schemes are torchao's GPU configs for int4 weight-only and float8 W8A8,
plus the int8 ones that also run on a CPU:

- int8wo: int8 weights, one scale per output channel (or per group of `--group-size`); activations stay in the
  model dtype.
- int8dq: int8 weights per channel and int8 activations per token, quantized at run time (W8A8).
- int4wo: int4 weights in groups (default 128), packed for tinygemm (`tile_packed_to_4d`), a CUDA kernel: the
  packing itself runs on the GPU, so this scheme is quantized on a CUDA device.
- float8dq: float8 E4M3 weights and per-token float8 activations, row-wise scales (`PerRow`): FP8 tensor cores,
  compute capability ≥ 8.9, checked before any weight loads.

The quality of the two CUDA schemes is measured on a CPU through `torchao_standin`, which computes the same
quantized values in memory without making an artifact.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from quantlab.errors import SpecError
from quantlab.methods.base import Backend, DeviceNeed, Log, QuantizeOutcome, WeightBits, dtype_bits
from quantlab.models import ModelInfo, SourceModel
from quantlab.spec import MethodSpec, torch_dtype


@dataclass(frozen=True)
class Scheme:
    summary: str
    bits: float  # per weight at the default group size, scales included (`weight_bits` counts other groups)
    needs: str = "any"  # "cuda": a CUDA GPU; "fp8": FP8 tensor cores (compute capability >= 8.9)


SCHEMES = {
    "int8wo": Scheme("int8 weights, one scale per output channel; activations in the model dtype", 8.0),
    "int8dq": Scheme("int8 weights per channel, int8 activations per token at run time (W8A8)", 8.0),
    "int4wo": Scheme("int4 weights in groups, packed for tinygemm (tile_packed_to_4d)", 4.25, needs="cuda"),
    "float8dq": Scheme("float8 E4M3 weights and per-token activations, row-wise scales", 8.0, needs="fp8"),
}
INT4_GROUPS = (32, 64, 128, 256)


def device_need(scheme: str) -> DeviceNeed:
    """What `scheme` needs of a device: to run, and for int4wo (packed on the GPU) to be made at all."""
    return DeviceNeed(SCHEMES[scheme].needs, f"torchao {scheme}", SCHEMES[scheme].summary)


def torchao_config(spec: MethodSpec):
    from torchao.quantization import (
        Float8DynamicActivationFloat8WeightConfig,
        Int4WeightOnlyConfig,
        Int8DynamicActivationInt8WeightConfig,
        Int8WeightOnlyConfig,
        PerRow,
    )
    from transformers import TorchAoConfig

    quant_type = {
        "int8wo": lambda: Int8WeightOnlyConfig(group_size=None if spec.group_size == -1 else spec.group_size),
        "int8dq": lambda: Int8DynamicActivationInt8WeightConfig(version=2),
        "int4wo": lambda: Int4WeightOnlyConfig(group_size=spec.group_size, int4_packing_format="tile_packed_to_4d"),
        "float8dq": lambda: Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()),
    }[spec.scheme]()
    return TorchAoConfig(quant_type=quant_type)


class TorchaoBackend(Backend):
    method = "torchao"
    name = "torchao"
    default = True
    requires = ("torchao",)
    extra = "torchao"
    summary = (
        "int8wo, int8dq (W8A8), int4wo (tinygemm, CUDA), float8dq (FP8 W8A8, cc ≥ 8.9) via transformers "
        "TorchAoConfig; safetensors with torchao metadata; loads in transformers, vLLM"
    )
    schemes = tuple(SCHEMES)
    default_scheme = "int8wo"
    loads_in = ("transformers", "vllm")
    options = frozenset({"scheme", "dtype", "group_size"})
    refusal = f"torchao is data-free and its scheme (--scheme {'|'.join(SCHEMES)}) sets the format"

    def resolve(self, spec: MethodSpec) -> MethodSpec:
        who = "torchao/torchao"
        scheme = (spec.scheme or self.default_scheme).lower()
        if scheme not in SCHEMES:
            raise SpecError(f"{who} has no scheme {spec.scheme!r}; choose one of {', '.join(SCHEMES)}")
        group = spec.group_size
        if scheme == "int4wo":
            group = 128 if group is None else group
            if group not in INT4_GROUPS:
                raise SpecError(f"{who} int4wo groups are {', '.join(map(str, INT4_GROUPS))} weights, not {group}")
        elif scheme == "int8wo":
            group = -1 if group is None else group
            if group != -1 and group not in INT4_GROUPS:
                raise SpecError(f"{who} int8wo scales per channel (-1) or per {', '.join(map(str, INT4_GROUPS))}")
        elif group is not None:
            raise SpecError(f"{who} --group-size applies to int8wo and int4wo; {scheme} scales per output channel")
        return spec.model_copy(update={"backend": self.name, "scheme": scheme, "group_size": group})

    def weight_bits(self, spec: MethodSpec) -> WeightBits:
        """int8 scales per channel (or per group, in the model dtype); int4wo keeps a bf16 scale and zero point
        per group (tinygemm's layout)."""
        other = dtype_bits(spec.dtype)
        group = spec.group_size
        if spec.scheme == "int4wo":
            return WeightBits(4 + 32 / group, other, f"int4 + a bf16 scale and zero point per {group} (tinygemm)")
        if spec.scheme == "int8wo" and group not in (None, -1):
            return WeightBits(8 + 16 / group, other, f"int8 + one scale per {group}")
        return WeightBits(SCHEMES[spec.scheme].bits, other, SCHEMES[spec.scheme].summary)

    def device_need(self, spec: MethodSpec) -> DeviceNeed:
        return device_need(spec.scheme)

    def for_model(self, spec: MethodSpec, info: ModelInfo) -> MethodSpec:
        spec = super().for_model(spec, info)
        problem = device_need(spec.scheme).problem(None)
        if problem:
            raise SpecError(problem)
        if spec.group_size not in (None, -1):
            for layer in info.linear_layers:
                if layer.name != info.lm_head and layer.in_features % spec.group_size:
                    raise SpecError(
                        f"layer {layer.name} (in_features {layer.in_features}) is not a whole number of "
                        f"{spec.scheme} groups of {spec.group_size}; choose another --group-size"
                    )
        return spec

    def quantize(
        self, source: SourceModel, spec: MethodSpec, out: Path, log: Log, *, trust_remote_code: bool = False
    ) -> QuantizeOutcome:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        # int4wo packs for a CUDA kernel and float8dq checks its hardware: both quantize on the GPU
        device = "cpu" if SCHEMES[spec.scheme].needs == "any" else "cuda:0"
        log(f"loading {source.ref} as {spec.dtype} on {device}, quantizing to torchao {spec.label()}")
        model = AutoModelForCausalLM.from_pretrained(
            source.path,
            dtype=torch_dtype(spec.dtype),
            quantization_config=torchao_config(spec),
            device_map=device,
            trust_remote_code=trust_remote_code,
        )
        log("saving")
        model.save_pretrained(out, safe_serialization=True)
        AutoTokenizer.from_pretrained(source.path, trust_remote_code=trust_remote_code).save_pretrained(out)
        return QuantizeOutcome(format=f"torchao {spec.scheme}")
