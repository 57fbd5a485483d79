"""`autoround`: AutoRound (Cheng et al., 2024) — per decoder block, sign-gradient descent tunes each weight's
rounding offset and the clipping range of each group so the block's output on the calibration activations moves
as little as possible; then the weights are rounded once, group-wise, like GPTQ's.

Backend: llm-compressor's `AutoRoundModifier` (default; it drives Intel's auto-round library one block at a
time), writing compressed-tensors pack-quantized checkpoints that load in transformers and vLLM. Calibrated on
the same windows as every other backend (`calibration.for_source`).
"""

from __future__ import annotations

from pathlib import Path

from quantlab.methods import llmcompressor_backend as lc
from quantlab.methods.base import Log, QuantizeOutcome
from quantlab.methods.common import INT_OPTIONS, WeightOnlyIntBackend, int_refusal
from quantlab.models import SourceModel
from quantlab.spec import MethodSpec, torch_dtype

# The library's own defaults (auto-round 0.15 and llm-compressor's AutoRoundModifier agree), recorded in the
# manifest so an artifact says how long it was tuned.
DEFAULT_ITERS = 200
DEFAULT_BATCH_SIZE = 8
AUTOROUND_OPTIONS = INT_OPTIONS | {"iters", "batch_size", "lr", "calibration"}


def _recipe(spec: MethodSpec, scheme, head: str) -> list:
    from llmcompressor.modifiers.autoround import AutoRoundModifier

    # torch.compile off: on a CPU host each block's first steps compile for longer than a short tuning run
    # takes, and the compiled graph needs a C++ toolchain at run time; the tuned values are the same.
    return [
        AutoRoundModifier(
            config_groups={"group_0": scheme},
            ignore=[head],
            iters=spec.iters,
            batch_size=spec.batch_size,
            lr=spec.lr,
            enable_torch_compile=False,
        )
    ]


def _back_to_dtype(model, spec: MethodSpec) -> None:
    """auto-round tunes each block in bf16 on a CPU (its mixed precision: `prefers_bf16`) and leaves the block
    so, which makes an fp32 model mixed and unrunnable. The tuned weights and scales are bf16 values, which fp32
    holds exactly, so casting back to the spec's dtype changes no value; integer zero points are untouched."""
    model.to(torch_dtype(spec.dtype))


class AutoRoundLlmCompressor(WeightOnlyIntBackend):
    method = "autoround"
    name = "llmcompressor"
    default = True
    requires = (*lc.REQUIRES, "auto-round")
    extra = lc.EXTRA
    loads_in = lc.LOADS_IN
    supported_bits = (2, 3, 4, 8)
    options = AUTOROUND_OPTIONS
    refusal = int_refusal("AutoRound", options)
    summary = "AutoRound int2/3/4/8 (tuned rounding), compressed-tensors pack-quantized; loads in transformers, vLLM"

    def option_defaults(self, spec: MethodSpec) -> dict:
        iters = DEFAULT_ITERS if spec.iters is None else spec.iters  # 0 is a choice: no tuning
        return {"iters": iters, "batch_size": spec.batch_size or DEFAULT_BATCH_SIZE}

    def quantize(
        self, source: SourceModel, spec: MethodSpec, out: Path, log: Log, *, trust_remote_code: bool = False
    ) -> QuantizeOutcome:
        outcome = lc.quantize_with(
            _recipe, source, spec, out, log, trust_remote_code=trust_remote_code, finish=_back_to_dtype
        )
        lr = f"lr {spec.lr}" if spec.lr else "lr 1/iters (the library's default)"
        outcome.notes.append(f"AutoRound tuning: {spec.iters} iters per block, batch {spec.batch_size}, {lr}")
        return outcome
