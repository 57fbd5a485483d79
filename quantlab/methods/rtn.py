"""`rtn`: round-to-nearest, weight-only integer quantization, data-free.

Done by llm-compressor's `QuantizationModifier` (no calibration data: scales come from each weight group's
min/max), saved as compressed-tensors `pack-quantized`, which transformers and vLLM load unmodified. The
output head stays unquantized, as in every W4A16/W8A16 preset of llm-compressor.
"""

from __future__ import annotations

import json
from pathlib import Path

from quantlab.errors import QuantizationError, SpecError
from quantlab.methods.base import Backend, Log, QuantizeOutcome
from quantlab.methods.registry import register
from quantlab.models import ModelInfo, SourceModel
from quantlab.spec import MethodSpec, torch_dtype

SUPPORTED_BITS = (4, 8)
DEFAULT_GROUP_SIZE = 128


def group_size_problem(info: ModelInfo, group_size: int, skip: set[str]) -> str | None:
    """The first quantized layer whose input width the group size does not divide, said as an error."""
    if group_size == -1:
        return None
    for layer in info.linear_layers:
        if layer.name in skip or layer.in_features % group_size == 0:
            continue
        widths = sorted({lay.in_features for lay in info.linear_layers if lay.name not in skip})
        divisors = [g for g in (32, 64, 128, 256) if all(w % g == 0 for w in widths)]
        hint = f"use one of {', '.join(map(str, divisors))}" if divisors else "use -1 (per channel)"
        return (f"--group-size {group_size} does not divide layer {layer.name} (in_features "
                f"{layer.in_features}); {hint}")
    return None


def _output_head_name(model) -> str:
    head = model.get_output_embeddings()
    return next((name for name, mod in model.named_modules() if mod is head), "lm_head")


@register
class RtnLlmCompressor(Backend):
    method = "rtn"
    name = "llmcompressor"
    default = True
    requires = ("llmcompressor", "compressed-tensors")
    extra = "llmcompressor"
    summary = "int4/int8 weight-only, compressed-tensors pack-quantized; loads in transformers, vLLM"

    def normalize(self, spec: MethodSpec) -> MethodSpec:
        bits = spec.bits if spec.bits is not None else 4
        if bits not in SUPPORTED_BITS:
            raise SpecError(f"method 'rtn' ({self.name}) supports --bits {' or '.join(map(str, SUPPORTED_BITS))}, "
                            f"not {bits}")
        group = spec.group_size if spec.group_size is not None else DEFAULT_GROUP_SIZE
        if group != -1 and group <= 0:
            raise SpecError(f"--group-size must be positive or -1 (per channel), not {group}")
        if spec.scheme is not None:
            raise SpecError("method 'rtn' takes no --scheme: it is set by --bits/--group-size/--symmetric")
        if spec.calibration is not None:
            raise SpecError("method 'rtn' is data-free: it takes no calibration settings")
        symmetric = True if spec.symmetric is None else spec.symmetric
        return spec.model_copy(update={"backend": self.name, "bits": bits, "group_size": group,
                                       "symmetric": symmetric})

    def fit(self, spec: MethodSpec, info: ModelInfo) -> MethodSpec:
        problem = group_size_problem(info, spec.group_size, {info.lm_head} if info.lm_head else set())
        if problem:
            raise SpecError(problem)
        return super().fit(spec, info)

    def quantize(self, source: SourceModel, spec: MethodSpec, out: Path, log: Log, *,
                 trust_remote_code: bool = False) -> QuantizeOutcome:
        from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
        from llmcompressor import oneshot
        from llmcompressor.modifiers.quantization import QuantizationModifier
        from transformers import AutoModelForCausalLM, AutoTokenizer

        log(f"loading {source.ref} as {spec.dtype}")
        model = AutoModelForCausalLM.from_pretrained(source.path, dtype=torch_dtype(spec.dtype),
                                                     trust_remote_code=trust_remote_code)
        weights = QuantizationArgs(
            num_bits=spec.bits, type="int", symmetric=spec.symmetric,
            strategy="channel" if spec.group_size == -1 else "group",
            group_size=None if spec.group_size == -1 else spec.group_size,
        )
        modifier = QuantizationModifier(
            config_groups={"group_0": QuantizationScheme(targets=["Linear"], weights=weights)},
            ignore=[_output_head_name(model)],
        )
        log(f"rounding weights to {spec.label()} (llm-compressor, data-free)")
        try:
            oneshot(model=model, recipe=[modifier])
        except Exception as exc:
            raise QuantizationError(f"llm-compressor failed: {exc}") from exc
        log("saving compressed-tensors")
        model.save_pretrained(out, save_compressed=True)
        AutoTokenizer.from_pretrained(source.path, trust_remote_code=trust_remote_code).save_pretrained(out)
        config = json.loads((out / "config.json").read_text())
        fmt = config.get("quantization_config", {}).get("format", "unknown")
        return QuantizeOutcome(format=f"compressed-tensors {fmt}", loads_in=["transformers", "vllm"])
