"""What the weight-only integer methods (rtn, gptq, awq) share: bits, group size, symmetry, calibration
defaults, and the group-size-vs-layer-width check."""

from __future__ import annotations

from typing import ClassVar

from quantlab.errors import SpecError
from quantlab.methods.base import Backend
from quantlab.models import ModelInfo
from quantlab.spec import Calibration, MethodSpec

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


class WeightOnlyIntBackend(Backend):
    """A backend writing integer weights with per-group scales; subclasses say what they support."""

    supported_bits: ClassVar[tuple[int, ...]] = (4, 8)
    default_bits: ClassVar[int] = 4
    default_symmetric: ClassVar[bool] = True
    calibrated: ClassVar[bool] = False
    per_channel: ClassVar[bool] = True  # accepts --group-size -1
    # Options only some methods take; a value for any other is refused rather than silently ignored.
    accepts: ClassVar[frozenset[str]] = frozenset()

    def normalize(self, spec: MethodSpec) -> MethodSpec:
        who = f"{self.method}/{self.name}"
        bits = spec.bits if spec.bits is not None else self.default_bits
        if bits not in self.supported_bits:
            raise SpecError(f"{who} supports --bits {' or '.join(map(str, self.supported_bits))}, not {bits}")
        group = spec.group_size if spec.group_size is not None else DEFAULT_GROUP_SIZE
        if group == -1 and not self.per_channel:
            raise SpecError(f"{who} needs a positive --group-size (no per-channel mode)")
        if group != -1 and group <= 0:
            raise SpecError(f"--group-size must be positive or -1 (per channel), not {group}")
        if spec.scheme is not None:
            raise SpecError(f"{who} takes no --scheme: it is set by --bits/--group-size/--symmetric")
        refuse_options(
            spec,
            who,
            tuple(
                o
                for o in ("act_order", "damp", "n_grid", "imatrix", "double_quant", "compute_dtype")
                if o not in self.accepts
            ),
            f"not an option of {self.method}",
        )
        calibration = resolve_calibration(spec, who, calibrated=self.calibrated)
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

    def option_defaults(self, spec: MethodSpec) -> dict:
        """Backend-specific defaults for act_order/damp/n_grid, recorded so the manifest shows them."""
        return {}

    def fit(self, spec: MethodSpec, info: ModelInfo) -> MethodSpec:
        problem = group_size_problem(info, spec.group_size, {info.lm_head} if info.lm_head else set())
        if problem:
            raise SpecError(problem)
        return super().fit(spec, info)


def refuse_options(spec: MethodSpec, who: str, options: tuple[str, ...], why: str) -> None:
    """An option this method has no use for is an error, never silently ignored."""
    for option in options:
        if getattr(spec, option) is not None:
            raise SpecError(f"{who} takes no --{option.replace('_', '-')}: {why}")


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
