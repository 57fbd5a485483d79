"""What fp8 and fp4 share: a named compressed-tensors preset per scheme, applied by llm-compressor.

The scheme name is the whole request (bits, grid, scale layout and activation handling come with it), so these
methods take `--scheme` (and `--dtype`, calibration where a scheme needs it) and nothing of the integer methods'
options. Each scheme states whether activations
are quantized too (W8A8/W4A4) or stay in the compute dtype (A16): the two are different formats with different
kernels and must never share a row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from quantlab.errors import QuantizationError, SpecError
from quantlab.methods import llmcompressor_backend as lc
from quantlab.methods.base import Backend, Log, QuantizeOutcome, WeightBits, dtype_bits
from quantlab.methods.common import resolve_calibration
from quantlab.models import ModelInfo, SourceModel, quantization_config
from quantlab.spec import MethodSpec


@dataclass(frozen=True)
class Preset:
    preset: str  # compressed-tensors preset the scheme is built from
    bits: float  # per weight, its scales included (a per-tensor scale counts as nothing)
    weights: str  # said in `quantlab methods`, the docs and the memory plan
    activations: str | None  # None: weight-only (A16), activations stay in the compute dtype
    group: int | None = None  # channels per scale along the input dimension (weights or activations)
    out_block: int | None = None  # rows per weight scale block along the output dimension
    calibrated: bool = False  # a static activation scale needs calibration data
    weight_only_variant: bool = False  # take the preset's weights and drop its activation quantization

    def build(self):
        scheme = lc.preset_scheme(self.preset)
        if self.weight_only_variant:
            scheme = scheme.model_copy(update={"input_activations": None})
        return scheme


def _fits(preset: Preset, layer) -> bool:
    return not (preset.group and layer.in_features % preset.group) and not (
        preset.out_block and layer.out_features % preset.out_block
    )


class PresetBackend(Backend):
    """A backend whose whole request is a scheme name: subclasses give `presets` (their `schemes`, in order),
    and declare `calibration` among their options only if some preset is calibrated."""

    presets: ClassVar[dict[str, Preset]]
    default_scheme: ClassVar[str]
    bf16_only: ClassVar[str | None] = None  # why the unquantized tensors must be bf16, if they must
    requires = lc.REQUIRES
    extra = lc.EXTRA
    loads_in = lc.LOADS_IN

    def weight_bits(self, spec: MethodSpec) -> WeightBits:
        preset = self.presets[spec.scheme]
        return WeightBits(linear=preset.bits, other=dtype_bits(spec.dtype), counted=preset.weights)

    def resolve(self, spec: MethodSpec) -> MethodSpec:
        who = f"{self.method}/{self.name}"
        name = (spec.scheme or self.default_scheme).upper()
        preset = self.presets.get(name)
        if preset is None:
            raise SpecError(f"{who} has no scheme {spec.scheme!r}; choose one of {', '.join(self.presets)}")
        calibration = resolve_calibration(spec, f"{who} {name}", calibrated=preset.calibrated)
        dtype = spec.dtype
        if self.bf16_only:
            if dtype not in ("auto", "bf16"):
                raise SpecError(f"{who} keeps unquantized tensors in bf16, not {dtype}: {self.bf16_only}")
            dtype = "bf16"
        return spec.model_copy(
            update={"backend": self.name, "scheme": name, "calibration": calibration, "dtype": dtype}
        )

    def for_model(self, spec: MethodSpec, info: ModelInfo) -> MethodSpec:
        layers = [layer for layer in info.linear_layers if layer.name != info.lm_head]
        preset = self.presets[spec.scheme]
        for layer in layers:
            if preset.group and layer.in_features % preset.group:
                what = (
                    f"groups of {preset.group} input channels, which do not divide layer {layer.name} "
                    f"(in_features {layer.in_features})"
                )
            elif preset.out_block and layer.out_features % preset.out_block:
                what = (
                    f"blocks of {preset.out_block} output rows, which do not divide layer {layer.name} "
                    f"(out_features {layer.out_features})"
                )
            else:
                continue
            fitting = [name for name, other in self.presets.items() if all(_fits(other, lay) for lay in layers)]
            hint = f"use --scheme {' or '.join(fitting)}" if fitting else "no scheme of this method fits its widths"
            raise SpecError(f"{spec.scheme} scales {what}; {hint}")
        return super().for_model(spec, info)

    def quantize(
        self, source: SourceModel, spec: MethodSpec, out: Path, log: Log, *, trust_remote_code: bool = False
    ) -> QuantizeOutcome:
        preset = self.presets[spec.scheme]
        outcome = lc.quantize_with(
            lc.single_recipe,
            source,
            spec,
            out,
            log,
            trust_remote_code=trust_remote_code,
            scheme=lambda _: preset.build(),
        )
        groups = (quantization_config(out) or {}).get("config_groups", {})
        acts = [g.get("input_activations") for g in groups.values()]
        if any(bool(a) != bool(preset.activations) for a in acts):  # the file must say what the row claims
            raise QuantizationError(f"{spec.scheme}: the saved config does not match the scheme's activation handling")
        outcome.notes.append(
            f"weights: {preset.weights}; activations: "
            f"{preset.activations or 'not quantized (A16: computed in ' + spec.dtype + ')'}"
        )
        return outcome
