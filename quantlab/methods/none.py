"""`none`: the unquantized model in a chosen dtype — the baseline every other artifact is measured against."""

from __future__ import annotations

from pathlib import Path

from quantlab.methods.base import Backend, Log, QuantizeOutcome, WeightBits, dtype_bits
from quantlab.models import SourceModel
from quantlab.spec import MethodSpec, dtype_short, torch_dtype


class NoneTransformers(Backend):
    method = "none"
    name = "transformers"
    default = True
    requires = ("transformers",)
    summary = "unquantized safetensors in fp32/bf16/fp16; loads in transformers, vLLM, llama.cpp's converter"
    loads_in = ("transformers", "vllm", "llama.cpp convert_hf_to_gguf.py")

    options = frozenset({"dtype"})
    refusal = "it only saves the unquantized model in --dtype"

    def resolve(self, spec: MethodSpec) -> MethodSpec:
        return spec.model_copy(update={"backend": self.name})

    def weight_bits(self, spec: MethodSpec) -> WeightBits:
        bits = dtype_bits(spec.dtype)
        return WeightBits(
            bits, bits, f"{spec.dtype if spec.dtype != 'auto' else 'source dtype (16-bit assumed)'} weights"
        )

    def quantize(
        self, source: SourceModel, spec: MethodSpec, out: Path, log: Log, *, trust_remote_code: bool = False
    ) -> QuantizeOutcome:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        log(f"loading {source.ref} as {spec.dtype}")
        model = AutoModelForCausalLM.from_pretrained(
            source.path, dtype=torch_dtype(spec.dtype), trust_remote_code=trust_remote_code
        )
        log("saving safetensors")
        model.save_pretrained(out)
        AutoTokenizer.from_pretrained(source.path, trust_remote_code=trust_remote_code).save_pretrained(out)
        return QuantizeOutcome(format=f"safetensors {dtype_short(model.dtype)}")
