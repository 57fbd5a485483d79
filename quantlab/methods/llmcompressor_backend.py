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


def rotation_modifiers(spec: MethodSpec) -> list:
    """The Hadamard rotation a spec asks for, as llm-compressor's transform modifier, placed before the
    quantization modifier so the weights (and NVFP4's activations) it rounds are the rotated ones.

    SpinQuant's R1 (the residual stream: every Linear's input side, the embedding's output side) and R2
    (attention values, per head) are fused into the weights, so the checkpoint is a plain compressed-tensors one
    that loads anywhere; the embedding is untied from the output head first, which then costs its own bytes.
    `random-hadamard`, because llm-compressor's plain `hadamard` is Sylvester's (powers of two only) and real
    widths are not (SmolLM2: 576 = 36 × 16); the random kind takes any width with a known Hadamard factor.
    The online rotations (QuIP's input rotation, SpinQuant's R3/R4) are left out: their checkpoints store the
    transforms, which transformers 5.17 does not re-apply on load (they load as unexpected keys and the logits
    change), so such an artifact would not be the model that was measured in memory."""
    if spec.rotation is None:
        return []
    from llmcompressor.modifiers.transform import SpinQuantModifier

    return [SpinQuantModifier(rotations=["R1", "R2"], transform_type="random-hadamard")]


def quantize_with(
    recipe: RecipeBuilder,
    source: SourceModel,
    spec: MethodSpec,
    out: Path,
    log: Log,
    *,
    trust_remote_code: bool,
    scheme: SchemeBuilder = weight_scheme,
    finish: Callable[[object, MethodSpec], None] | None = None,
) -> QuantizeOutcome:
    """Quantize `source` with the modifiers `recipe` builds (after the rotation the spec asks for) and save the
    compressed-tensors checkpoint into `out`; `finish(model, spec)` runs on the quantized model before saving."""
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
    modifiers = rotation_modifiers(spec) + recipe(spec, scheme(spec), output_head_name(model))
    log(f"{spec.method} {spec.label()} with llm-compressor" + (" (calibrating)" if record else " (data-free)"))
    try:
        with compat.llmcompressor_on_cpu(), compat.llmcompressor_gptq_lean():
            oneshot(model=model, recipe=modifiers, **kwargs)
    except Exception as exc:
        raise QuantizationError(f"llm-compressor failed: {exc}") from exc
    if finish is not None:
        finish(model, spec)
    log("saving compressed-tensors")
    model.save_pretrained(out, save_compressed=True)
    tokenizer.save_pretrained(out)
    fmt = (quantization_config(out) or {}).get("format", "unknown")
    return QuantizeOutcome(format=f"compressed-tensors {fmt}", calibration=record)
