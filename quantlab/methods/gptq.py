"""`gptq`: GPTQ (Frantar et al., 2022) — weights rounded column by column, each rounding error compensated
on the columns not yet rounded using the calibration activations' Hessian.

Backends: llm-compressor (default; compressed-tensors, loads in transformers and vLLM), GPTQModel (the GPTQ
checkpoint format, `quant_method: gptq`), and auto-gptq, end-of-life upstream, kept only to say why it can't
run and what replaces it.
"""

from __future__ import annotations

from pathlib import Path

from quantlab.env import is_installed
from quantlab.errors import BackendUnavailableError, exception_line
from quantlab.methods import gptqmodel_backend as gm
from quantlab.methods import llmcompressor_backend as lc
from quantlab.methods.base import Availability, Log, QuantizeOutcome
from quantlab.methods.common import INT_OPTIONS, WeightOnlyIntBackend, int_refusal
from quantlab.models import SourceModel
from quantlab.spec import MethodSpec

DEFAULT_DAMP = 0.01
GPTQ_OPTIONS = INT_OPTIONS | {"act_order", "damp", "calibration"}


def _recipe(spec: MethodSpec, scheme, head: str) -> list:
    from llmcompressor.modifiers.gptq import GPTQModifier

    actorder = {"off": None, "static": "static", "group": "group"}[spec.act_order]
    return [GPTQModifier(config_groups={"group_0": scheme}, ignore=[head], dampening_frac=spec.damp, actorder=actorder)]


class GptqLlmCompressor(WeightOnlyIntBackend):
    method = "gptq"
    name = "llmcompressor"
    default = True
    requires = lc.REQUIRES
    extra = lc.EXTRA
    loads_in = lc.LOADS_IN
    options = GPTQ_OPTIONS | {"rotation"}
    refusal = int_refusal("GPTQ", options)
    summary = "GPTQ int4/int8 (optionally rotated), compressed-tensors pack-quantized; loads in transformers, vLLM"

    def option_defaults(self, spec: MethodSpec) -> dict:
        # llm-compressor's own defaults: static act-order (no runtime cost), 1% dampening
        return {"act_order": spec.act_order or "static", "damp": spec.damp or DEFAULT_DAMP}

    def quantize(
        self, source: SourceModel, spec: MethodSpec, out: Path, log: Log, *, trust_remote_code: bool = False
    ) -> QuantizeOutcome:
        return lc.quantize_with(_recipe, source, spec, out, log, trust_remote_code=trust_remote_code)


class GptqGptqModel(WeightOnlyIntBackend):
    method = "gptq"
    name = "gptqmodel"
    requires = gm.REQUIRES
    extra = gm.EXTRA
    loads_in = gm.LOADS_IN
    supported_bits = (3, 4, 8)
    options = GPTQ_OPTIONS
    refusal = int_refusal("GPTQ", options)
    summary = "GPTQ int3/4/8, GPTQ checkpoint (quant_method gptq); loads in transformers (+gptqmodel), vLLM, TGI"

    def resolve(self, spec: MethodSpec) -> MethodSpec:
        spec = super().resolve(spec)
        gm.check_group_size(spec, f"{self.method}/{self.name}")
        return spec

    def option_defaults(self, spec: MethodSpec) -> dict:
        # GPTQModel's defaults: group-aware reordering (static, no runtime cost), 5% dampening
        return {"act_order": spec.act_order or "static", "damp": spec.damp or gm.DEFAULT_DAMP}

    def quantize(
        self, source: SourceModel, spec: MethodSpec, out: Path, log: Log, *, trust_remote_code: bool = False
    ) -> QuantizeOutcome:
        return gm.quantize_with("gptq", source, spec, out, log, trust_remote_code=trust_remote_code)


class GptqAutoGptq(WeightOnlyIntBackend):
    """auto-gptq is end-of-life upstream (its README points to GPTQModel). quantlab detects it and explains
    why it cannot run rather than pretending to support it."""

    method = "gptq"
    name = "auto-gptq"
    legacy = True
    requires = ("auto-gptq",)
    loads_in = gm.LOADS_IN  # the GPTQ checkpoint format GPTQModel writes
    options = INT_OPTIONS | {"calibration"}  # quantlab never drove its GPTQ options: it cannot run here
    refusal = int_refusal("legacy auto-gptq", options)
    summary = "legacy, end-of-life upstream: replaced by --backend gptqmodel (same checkpoint format)"

    def availability(self) -> Availability:
        replacement = "use --backend gptqmodel (same GPTQ format) or llmcompressor"
        if not is_installed("auto-gptq"):
            return Availability(False, f"auto-gptq not installed; it is end-of-life upstream: {replacement}")
        try:
            import auto_gptq  # noqa: F401
        except Exception as exc:  # it fails in several ways on transformers 5
            reason = exception_line(exc)
            return Availability(
                False, f"auto-gptq does not import here ({reason}); end-of-life upstream: {replacement}"
            )
        import torch

        if not torch.cuda.is_available():
            return Availability(False, f"auto-gptq quantizes only on CUDA; end-of-life upstream: {replacement}")
        return Availability(False, f"end-of-life upstream and not driven by quantlab: {replacement}")

    def quantize(
        self, source: SourceModel, spec: MethodSpec, out: Path, log: Log, *, trust_remote_code: bool = False
    ) -> QuantizeOutcome:
        raise BackendUnavailableError(f"gptq/auto-gptq cannot run: {self.availability().reason}")
