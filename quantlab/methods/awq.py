"""`awq`: activation-aware weight quantization (Lin et al., 2023) — per-channel scales, searched on the
calibration activations, move the salient input channels' magnitude into the weights before rounding.

Backends: llm-compressor (default; compressed-tensors), GPTQModel (AWQ GEMM checkpoints,
`quant_method: awq`) and AutoAWQ, deprecated upstream, as an optional legacy backend.
"""

from __future__ import annotations

from pathlib import Path

from quantlab import calibration, compat
from quantlab.errors import QuantizationError, SpecError
from quantlab.methods import gptqmodel_backend as gm
from quantlab.methods import llmcompressor_backend as lc
from quantlab.methods.base import Log, QuantizeOutcome
from quantlab.methods.common import INT_OPTIONS, WeightOnlyIntBackend, int_refusal
from quantlab.models import ModelInfo, SourceModel
from quantlab.spec import MethodSpec, torch_dtype

DEFAULT_N_GRID = 20  # the AWQ paper's and every library's default


def _recipe(spec: MethodSpec, scheme, head: str) -> list:
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform.awq import AWQModifier

    return [AWQModifier(n_grid=spec.n_grid), QuantizationModifier(config_groups={"group_0": scheme}, ignore=[head])]


class AwqLlmCompressor(WeightOnlyIntBackend):
    method = "awq"
    name = "llmcompressor"
    default = True
    requires = lc.REQUIRES
    extra = lc.EXTRA
    loads_in = lc.LOADS_IN
    options = INT_OPTIONS | {"n_grid", "calibration"}
    refusal = int_refusal("AWQ", options)
    default_symmetric = False  # AWQ's published recipe (and llm-compressor's W4A16_ASYM preset) uses zero-points
    per_channel = False
    summary = "AWQ int4/int8, compressed-tensors pack-quantized; loads in transformers, vLLM"

    def option_defaults(self, spec: MethodSpec) -> dict:
        return {"n_grid": spec.n_grid or DEFAULT_N_GRID}

    def quantize(
        self, source: SourceModel, spec: MethodSpec, out: Path, log: Log, *, trust_remote_code: bool = False
    ) -> QuantizeOutcome:
        return lc.quantize_with(_recipe, source, spec, out, log, trust_remote_code=trust_remote_code)


def _half_dtype(spec: MethodSpec, info: ModelInfo, who: str) -> MethodSpec:
    """AWQ GEMM kernels compute in fp16/bf16 only: `auto` on an fp32 source becomes fp16."""
    if spec.dtype == "fp32":
        raise SpecError(f"{who} computes in fp16 or bf16 only; pass --dtype bf16 or fp16")
    if spec.dtype == "auto":
        return spec.model_copy(update={"dtype": info.dtype if info.dtype in ("bf16", "fp16") else "fp16"})
    return spec


class AwqGptqModel(WeightOnlyIntBackend):
    method = "awq"
    name = "gptqmodel"
    requires = gm.REQUIRES
    extra = gm.EXTRA
    loads_in = gm.LOADS_IN
    supported_bits = (4,)  # AWQ GEMM is a 4-bit format; GPTQModel's 8-bit AWQ packs wrong codes from bf16
    options = INT_OPTIONS | {"calibration"}  # quantlab passes GPTQModel's AWQ no scale-search grid (--n-grid)
    refusal = int_refusal("GPTQModel's AWQ", options)
    default_symmetric = False
    per_channel = False
    summary = "AWQ int4, AWQ GEMM checkpoint (quant_method awq); loads in transformers (+gptqmodel), vLLM, TGI"

    def resolve(self, spec: MethodSpec) -> MethodSpec:
        spec = super().resolve(spec)
        gm.check_group_size(spec, f"{self.method}/{self.name}")
        return spec

    def for_model(self, spec: MethodSpec, info: ModelInfo) -> MethodSpec:
        return super().for_model(_half_dtype(spec, info, f"{self.method}/{self.name}"), info)

    def quantize(
        self, source: SourceModel, spec: MethodSpec, out: Path, log: Log, *, trust_remote_code: bool = False
    ) -> QuantizeOutcome:
        return gm.quantize_with("awq", source, spec, out, log, trust_remote_code=trust_remote_code)


class AwqAutoAwq(WeightOnlyIntBackend):
    """AutoAWQ is deprecated upstream (it points to llm-compressor) but still quantizes on CPU. Its own loader
    needs Intel's IPEX, which does not match torch 2.13, so its artifacts are served by transformers, which
    loads AWQ GEMM checkpoints through gptqmodel."""

    method = "awq"
    name = "autoawq"
    legacy = True
    requires = ("autoawq", "gptqmodel", "optimum")  # gptqmodel + optimum: what transformers loads AWQ with
    extra = "autoawq"
    loads_in = ("transformers", "vllm")  # AWQ GEMM, which transformers loads through gptqmodel
    supported_bits = (4,)
    options = INT_OPTIONS | {"calibration"}
    refusal = int_refusal("AutoAWQ", options)
    default_symmetric = False
    per_channel = False
    summary = "legacy (deprecated upstream): AWQ int4 GEMM checkpoint; served by transformers (+gptqmodel), vLLM"

    def for_model(self, spec: MethodSpec, info: ModelInfo) -> MethodSpec:
        return super().for_model(_half_dtype(spec, info, f"{self.method}/{self.name}"), info)

    def quantize(
        self, source: SourceModel, spec: MethodSpec, out: Path, log: Log, *, trust_remote_code: bool = False
    ) -> QuantizeOutcome:
        tokenizer, samples, record = calibration.for_source(
            source.path, spec.calibration, log, trust_remote_code=trust_remote_code
        )
        with compat.autoawq_quietly():
            from awq import AutoAWQForCausalLM

            log(f"loading {source.ref} as {spec.dtype} (AutoAWQ)")
            try:
                model = AutoAWQForCausalLM.from_pretrained(
                    source.path,
                    torch_dtype=torch_dtype(spec.dtype),
                    device_map="cpu",
                    trust_remote_code=trust_remote_code,
                )
                log(f"awq {spec.label()} with AutoAWQ (calibrating)")
                # Rows of exactly seq_len with max_calib_seq_len=seq_len: AutoAWQ concatenates and re-splits
                # its calibration rows, which then gives back exactly our samples.
                model.quantize(
                    tokenizer,
                    quant_config={
                        "zero_point": not spec.symmetric,
                        "q_group_size": spec.group_size,
                        "w_bit": spec.bits,
                        "version": "GEMM",
                    },
                    calib_data=samples.tolist(),
                    max_calib_samples=len(samples),
                    max_calib_seq_len=samples.shape[1],
                    n_parallel_calib_samples=None,
                )
                log("saving")
                model.save_quantized(str(out))
            except Exception as exc:
                raise QuantizationError(f"AutoAWQ failed: {exc}") from exc
        tokenizer.save_pretrained(out)
        return QuantizeOutcome(
            format="awq gemm",
            calibration=record,
            notes=["AutoAWQ records no version in the checkpoint; see the manifest's libraries"],
        )
