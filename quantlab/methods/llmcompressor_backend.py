"""The llm-compressor path shared by rtn, gptq, awq, fp8 and fp4: load, `oneshot(recipe, calibration)`, save as
compressed-tensors. Each method only says which scheme its Linear layers get and which modifiers make up its
recipe."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from quantlab import calibration, compat
from quantlab.errors import QuantizationError
from quantlab.methods.base import Log, QuantizeOutcome
from quantlab.methods.common import output_head_name
from quantlab.models import SourceModel, quantization_config
from quantlab.spec import MethodSpec, torch_dtype

REQUIRES = ("llmcompressor", "compressed-tensors")
EXTRA = "llmcompressor"
LOADS_IN = ("transformers", "vllm")  # compressed-tensors checkpoints

# (spec, scheme for the Linear layers, name of the output head) -> the list of modifiers
RecipeBuilder = Callable[[MethodSpec, object, str], list]
# spec -> the compressed-tensors QuantizationScheme of the Linear layers
SchemeBuilder = Callable[[MethodSpec], object]


def weight_scheme(spec: MethodSpec):
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    weights = QuantizationArgs(
        num_bits=spec.bits,
        type="int",
        symmetric=spec.symmetric,
        strategy="channel" if spec.group_size == -1 else "group",
        group_size=None if spec.group_size == -1 else spec.group_size,
    )
    return QuantizationScheme(targets=["Linear"], weights=weights)


def _dataset(samples: np.ndarray):
    """Pre-tokenized samples as llm-compressor takes them: it will not re-tokenize or pad these."""
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": samples.tolist(), "attention_mask": np.ones_like(samples).tolist()})


def preset_scheme(name: str):
    """One of compressed-tensors' named presets (FP8_DYNAMIC, NVFP4, ...) for the Linear layers."""
    from compressed_tensors.quantization import QuantizationScheme, preset_name_to_scheme

    scheme = preset_name_to_scheme(name, ["Linear"])
    assert isinstance(scheme, QuantizationScheme)
    return scheme


def single_recipe(spec: MethodSpec, scheme, head: str) -> list:
    """Round-to-nearest with llm-compressor's observers: one `QuantizationModifier`, the output head left out.
    With calibration data the observers also set the static activation scales (NVFP4's global scale)."""
    from llmcompressor.modifiers.quantization import QuantizationModifier

    return [QuantizationModifier(config_groups={"group_0": scheme}, ignore=[head])]


def quantize_with(
    recipe: RecipeBuilder,
    source: SourceModel,
    spec: MethodSpec,
    out: Path,
    log: Log,
    *,
    trust_remote_code: bool,
    scheme: SchemeBuilder = weight_scheme,
) -> QuantizeOutcome:
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM, AutoTokenizer

    record = None
    kwargs: dict = {}
    if spec.calibration is None:
        tokenizer = AutoTokenizer.from_pretrained(source.path, trust_remote_code=trust_remote_code)
    else:
        tokenizer, samples, record = calibration.for_source(
            source.path, spec.calibration, log, trust_remote_code=trust_remote_code
        )
        kwargs = {
            "dataset": _dataset(samples),
            "num_calibration_samples": len(samples),
            "max_seq_length": samples.shape[1],
            "shuffle_calibration_samples": False,
        }
    log(f"loading {source.ref} as {spec.dtype}")
    model = AutoModelForCausalLM.from_pretrained(
        source.path, dtype=torch_dtype(spec.dtype), trust_remote_code=trust_remote_code
    )
    modifiers = recipe(spec, scheme(spec), output_head_name(model))
    log(f"{spec.method} {spec.label()} with llm-compressor" + (" (calibrating)" if record else " (data-free)"))
    try:
        with compat.llmcompressor_on_cpu(), compat.llmcompressor_gptq_lean():
            oneshot(model=model, recipe=modifiers, **kwargs)
    except Exception as exc:
        raise QuantizationError(f"llm-compressor failed: {exc}") from exc
    log("saving compressed-tensors")
    model.save_pretrained(out, save_compressed=True)
    tokenizer.save_pretrained(out)
    fmt = (quantization_config(out) or {}).get("format", "unknown")
    return QuantizeOutcome(format=f"compressed-tensors {fmt}", calibration=record)
