"""What the weight-only integer methods (rtn, gptq, awq) share: bits, group size, symmetry, calibration
defaults, the reason they refuse other options, and the group-size-vs-layer-width check."""

from __future__ import annotations

from typing import ClassVar

from quantlab.errors import SpecError
from quantlab.methods.base import Backend, WeightBits, dtype_bits
from quantlab.models import ModelInfo
from quantlab.spec import OPTION_FIELDS, Calibration, MethodSpec, option_flag

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
        return f"--group-size {group_size} does not divide layer {layer.name} (in_features {layer.in_features}); {hint}"
    return None


# What every integer weight-only backend takes; each adds its algorithm's own options (and calibration if any).
INT_OPTIONS = frozenset({"bits", "group_size", "symmetric", "dtype"})


def int_refusal(algorithm: str, options: frozenset[str]) -> str:
    """Why an integer weight-only backend refuses an option: the options it takes are its whole request. Said
    from the declaration itself, so the reason cannot drift from what is accepted."""
    flags = [option_flag(o) for o in OPTION_FIELDS if o in options and o not in ("dtype", "calibration")]
    if "calibration" in options:
        return f"{algorithm} is set by {', '.join(flags)} and its calibration data"
    return f"{algorithm} is data-free and set by {', '.join(flags[:-1])} and {flags[-1]} alone"


class WeightOnlyIntBackend(Backend):
    """A backend writing integer weights with per-group scales; subclasses say what they support."""

    supported_bits: ClassVar[tuple[int, ...]] = (4, 8)
    default_bits: ClassVar[int] = 4
    default_symmetric: ClassVar[bool] = True
    per_channel: ClassVar[bool] = True  # accepts --group-size -1

    def resolve(self, spec: MethodSpec) -> MethodSpec:
        who = f"{self.method}/{self.name}"
        bits = spec.bits if spec.bits is not None else self.default_bits
        if bits not in self.supported_bits:
            raise SpecError(f"{who} supports --bits {' or '.join(map(str, self.supported_bits))}, not {bits}")
        group = spec.group_size if spec.group_size is not None else DEFAULT_GROUP_SIZE
        if group == -1 and not self.per_channel:
            raise SpecError(f"{who} needs a positive --group-size (no per-channel mode)")
        if group != -1 and group <= 0:
            raise SpecError(f"--group-size must be positive or -1 (per channel), not {group}")
        calibration = resolve_calibration(spec, who, calibrated="calibration" in self.options)
        symmetric = self.default_symmetric if spec.symmetric is None else spec.symmetric
        return spec.model_copy(
            update={
                "backend": self.name,
                "bits": bits,
                "group_size": group,
                "symmetric": symmetric,
                "calibration": calibration,
                **self.option_defaults(spec),
            }
        )

    def weight_bits(self, spec: MethodSpec) -> WeightBits:
        """One 16-bit scale per group, and a zero point of `bits` per group when asymmetric."""
        other = dtype_bits(spec.dtype)
        if spec.group_size == -1:
            return WeightBits(float(spec.bits), other, f"int{spec.bits}, one scale per output channel")
        extra = 16 + (0 if spec.symmetric else spec.bits)
        zero = "" if spec.symmetric else " and zero"
        return WeightBits(
            spec.bits + extra / spec.group_size, other, f"int{spec.bits} + one 16-bit scale{zero} per {spec.group_size}"
        )

    def option_defaults(self, spec: MethodSpec) -> dict:
        """Backend-specific defaults for act_order/damp/n_grid, recorded so the manifest shows them."""
        return {}

    def for_model(self, spec: MethodSpec, info: ModelInfo) -> MethodSpec:
        problem = group_size_problem(info, spec.group_size, {info.lm_head} if info.lm_head else set())
        if problem:
            raise SpecError(problem)
        return super().for_model(spec, info)


def resolve_calibration(spec: MethodSpec, who: str, *, calibrated: bool) -> Calibration | None:
    """A calibrated method gets the default calibration when none is given; a data-free one refuses any."""
    if calibrated:
        return spec.calibration or Calibration()
    if spec.calibration is not None:
        raise SpecError(f"{who} is data-free: it takes no calibration settings")
    return None


def output_head_name(model) -> str:
    head = model.get_output_embeddings()
    return next((name for name, mod in model.named_modules() if mod is head), "lm_head")
