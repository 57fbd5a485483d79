"""`bnb`: bitsandbytes 4-bit (NF4, FP4; QLoRA) and 8-bit (LLM.int8), through transformers' BitsAndBytesConfig.

bitsandbytes quantizes as the weights load (blocks of 64 weights per absmax scale for 4-bit; per-row int8 with
fp16 outlier columns for LLM.int8); the artifact is what `save_pretrained` writes, with the
`quantization_config` transformers and vLLM read back. Data-free.

bitsandbytes' CPU 4-bit kernel (used on CPUs with AVX512-BF16) repacks the weights in tiles and needs
in_features % 64 == 0 and out_features % 32 == 0; other widths crash at the first forward (bitsandbytes 0.50).
So on such a host the widths are checked before anything is written.
"""

from __future__ import annotations

from pathlib import Path

from quantlab.errors import SpecError
from quantlab.methods.base import Backend, Log, QuantizeOutcome, WeightBits, dtype_bits
from quantlab.models import ModelInfo, SourceModel
from quantlab.spec import MethodSpec, torch_dtype

SCHEMES = ("nf4", "fp4", "int8")
CPU_4BIT_IN, CPU_4BIT_OUT = 64, 32


def cpu_4bit_kernel_available() -> bool:
    """Whether bitsandbytes would use its tiled CPU 4-bit kernel on this host (it keys on AVX512-BF16)."""
    from bitsandbytes.functional import has_avx512bf16

    return bool(has_avx512bf16())


def cpu_width_problem(info: ModelInfo) -> str | None:
    for layer in info.linear_layers:
        if layer.name == info.lm_head:
            continue
        if layer.in_features % CPU_4BIT_IN or layer.out_features % CPU_4BIT_OUT:
            return (
                f"layer {layer.name} (in_features {layer.in_features}, out_features {layer.out_features}) does "
                f"not fit bitsandbytes' CPU 4-bit kernel, which this host (AVX512-BF16) would use: it needs "
                f"in_features % {CPU_4BIT_IN} == 0 and out_features % {CPU_4BIT_OUT} == 0. Use --scheme int8, "
                "or quantize and run this model on a CUDA GPU"
            )
    return None


def bnb_config(spec: MethodSpec):
    from transformers import BitsAndBytesConfig

    if spec.scheme == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=spec.scheme,
        bnb_4bit_use_double_quant=spec.double_quant,
        bnb_4bit_compute_dtype=torch_dtype(spec.compute_dtype),
    )


class BnbBitsandbytes(Backend):
    method = "bnb"
    name = "bitsandbytes"
    default = True
    requires = ("bitsandbytes",)
    extra = "bnb"
    summary = (
        "nf4 / fp4 (± double quant) and int8 (LLM.int8) via transformers BitsAndBytesConfig; "
        "save_pretrained with quantization_config; loads in transformers, vLLM"
    )
    schemes = SCHEMES
    default_scheme = "nf4"
    loads_in = ("transformers", "vllm")
    # --double-quant and --compute-dtype are 4-bit settings; int8 refuses them by value in `resolve`.
    options = frozenset({"scheme", "dtype", "double_quant", "compute_dtype"})
    refusal = f"bitsandbytes is data-free and its scheme (--scheme {'|'.join(SCHEMES)}) sets the format"

    def resolve(self, spec: MethodSpec) -> MethodSpec:
        who = "bnb/bitsandbytes"
        scheme = (spec.scheme or self.default_scheme).lower()
        if scheme not in SCHEMES:
            raise SpecError(f"{who} has no scheme {spec.scheme!r}; choose one of {', '.join(SCHEMES)}")
        if scheme == "int8":
            if spec.double_quant:
                raise SpecError(f"{who} --double-quant applies to 4-bit schemes (nf4, fp4), not int8")
            if spec.compute_dtype is not None:
                raise SpecError(
                    f"{who} int8 takes no --compute-dtype: LLM.int8 computes in int8 with fp16 outlier columns"
                )
            return spec.model_copy(update={"backend": self.name, "scheme": scheme})
        return spec.model_copy(update={"backend": self.name, "scheme": scheme, "double_quant": bool(spec.double_quant)})

    def weight_bits(self, spec: MethodSpec) -> WeightBits:
        other = dtype_bits(spec.dtype)
        if spec.scheme == "int8":
            return WeightBits(8.0, other, "int8, one fp32 scale per row")
        if spec.double_quant:
            return WeightBits(4.127, other, f"{spec.scheme} + 8-bit absmax per 64 (double quantization)")
        return WeightBits(4.5, other, f"{spec.scheme} + one fp32 absmax per 64")

    def for_model(self, spec: MethodSpec, info: ModelInfo) -> MethodSpec:
        spec = super().for_model(spec, info)
        if spec.scheme != "int8":
            if cpu_4bit_kernel_available():
                problem = cpu_width_problem(info)
                if problem:
                    raise SpecError(problem)
            if spec.compute_dtype is None:
                spec = spec.model_copy(update={"compute_dtype": spec.dtype})
        return spec

    def quantize(
        self, source: SourceModel, spec: MethodSpec, out: Path, log: Log, *, trust_remote_code: bool = False
    ) -> QuantizeOutcome:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        log(f"loading {source.ref} as {spec.dtype}, quantizing to bitsandbytes {spec.label()}")
        model = AutoModelForCausalLM.from_pretrained(
            source.path,
            dtype=torch_dtype(spec.dtype),
            quantization_config=bnb_config(spec),
            device_map="cpu",
            trust_remote_code=trust_remote_code,
        )
        log("saving")
        model.save_pretrained(out)
        AutoTokenizer.from_pretrained(source.path, trust_remote_code=trust_remote_code).save_pretrained(out)
        return QuantizeOutcome(format=f"bitsandbytes {spec.scheme}")
