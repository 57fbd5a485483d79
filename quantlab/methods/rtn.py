"""`rtn`: round-to-nearest, weight-only integer quantization, data-free.

Done by llm-compressor's `QuantizationModifier` (no calibration data: scales come from each weight group's
min/max), saved as compressed-tensors `pack-quantized`, which transformers and vLLM load unmodified. The
output head stays unquantized, as in every W4A16/W8A16 preset of llm-compressor.
"""

from __future__ import annotations

from pathlib import Path

from quantlab.methods import llmcompressor_backend as lc
from quantlab.methods.base import Log, QuantizeOutcome
from quantlab.methods.common import INT_OPTIONS, WeightOnlyIntBackend, int_refusal
from quantlab.models import SourceModel
from quantlab.spec import MethodSpec


class RtnLlmCompressor(WeightOnlyIntBackend):
    method = "rtn"
    name = "llmcompressor"
    default = True
    requires = lc.REQUIRES
    extra = lc.EXTRA
    loads_in = lc.LOADS_IN
    options = INT_OPTIONS
    refusal = int_refusal("round-to-nearest", options)
    summary = "int4/int8 weight-only, compressed-tensors pack-quantized; loads in transformers, vLLM"

    def quantize(
        self, source: SourceModel, spec: MethodSpec, out: Path, log: Log, *, trust_remote_code: bool = False
    ) -> QuantizeOutcome:
        return lc.quantize_with(lc.single_recipe, source, spec, out, log, trust_remote_code=trust_remote_code)
