"""`autoround`: AutoRound (Cheng et al., 2024) — per decoder block, sign-gradient descent tunes each weight's
rounding offset and the clipping range of each group so the block's output on the calibration activations moves
as little as possible; then the weights are rounded once, group-wise, like GPTQ's.

Backends, both calibrated on the same windows as every other backend (`calibration.for_source`):
- llmcompressor (default): llm-compressor's `AutoRoundModifier`, which drives Intel's auto-round library one
  block at a time, writing compressed-tensors pack-quantized checkpoints that load in transformers and vLLM.
- autoround: auto-round itself, tuning for a GGUF type and writing the file with its own bundled copy of
  llama.cpp's converter (and PyPI `gguf`); the file loads in llama.cpp.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from quantlab import calibration
from quantlab.errors import QuantizationError, SpecError
from quantlab.methods import llmcompressor_backend as lc
from quantlab.methods.base import Backend, Log, QuantizeOutcome, WeightBits
from quantlab.methods.common import INT_OPTIONS, WeightOnlyIntBackend, int_refusal, resolve_calibration
from quantlab.methods.gguf import LOADS_IN as GGUF_LOADS_IN
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


# The GGUF types auto-round 0.15 tunes and exports (its `gguf:*` presets) that quantlab's table of llama.cpp
# types describes; left out: its own Q2_K_MIXED recipe (no llama.cpp type) and Q2_K_S (not in that table).
GGUF_SCHEMES = ("Q4_K_M", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q5_K_S")
GGUF_SCHEMES += ("Q5_K_M", "Q6_K", "Q8_0")


class AutoRoundGGUF(Backend):
    method = "autoround"
    name = "autoround"
    requires = ("auto-round", "gguf", "llama-cpp-python")  # llama-cpp-python: the runtime that loads the file
    extra = "llmcompressor"
    loads_in = GGUF_LOADS_IN
    schemes = GGUF_SCHEMES
    default_scheme = "Q4_K_M"
    options = frozenset({"scheme", "iters", "batch_size", "lr", "calibration"})
    refusal = "the GGUF type (--scheme, e.g. Q4_K_M) sets the bits, blocks and the float tensors' type"
    summary = "AutoRound tuned for a GGUF type (Q3_K_S…Q8_0), written by auto-round's own converter; loads in llama.cpp"

    def resolve(self, spec: MethodSpec) -> MethodSpec:
        who = f"{self.method}/{self.name}"
        name = (spec.scheme or self.default_scheme).upper()
        if name not in self.schemes:
            raise SpecError(f"{who} has no scheme {spec.scheme!r}; choose one of {', '.join(self.schemes)}")
        # auto-round itself recommends iters 0 for the GGUF formats it exports (it warns otherwise): its
        # optimized round-to-nearest, which searches each block's scales on the calibration data.
        iters = 0 if spec.iters is None else spec.iters
        return spec.model_copy(
            update={
                "backend": self.name,
                "scheme": name,
                "calibration": resolve_calibration(spec, who, calibrated=True),
                "iters": iters,
                "batch_size": spec.batch_size or DEFAULT_BATCH_SIZE,
            }
        )

    def weight_bits(self, spec: MethodSpec) -> WeightBits:
        from quantlab.llamacpp.types import lookup

        bits = lookup(spec.scheme).bits
        return WeightBits(
            bits, bits, f"{spec.scheme} blocks; tensors whose rows do not fit fall back, so files run larger"
        )

    def quantize(
        self, source: SourceModel, spec: MethodSpec, out: Path, log: Log, *, trust_remote_code: bool = False
    ) -> QuantizeOutcome:
        from quantlab.methods.gguf import read_back

        tokenizer, samples, record = calibration.for_source(
            source.path, spec.calibration, log, trust_remote_code=trust_remote_code
        )
        model_file = out / f"model-{spec.scheme}.gguf"
        _autoround_gguf(source, spec, samples, out / "autoround-work", model_file, log)
        # The HF tokenizer beside the GGUF, as the gguf method keeps it: the bench scores the same token ids
        # through every runtime.
        tokenizer.save_pretrained(out)
        gguf = read_back(model_file, spec.scheme, source, log, trust_remote_code=trust_remote_code)
        lr = f"lr {spec.lr}" if spec.lr else "lr 1/iters (the library's default)"
        notes = [f"AutoRound tuning: {spec.iters} iters per block, batch {spec.batch_size}, {lr}"]
        if gguf.fallbacks:
            notes.append(f"{len(gguf.fallbacks)} tensors fell back (rows not a multiple of 256)")
        return QuantizeOutcome(
            format=f"gguf {spec.scheme}",
            calibration=record,
            gguf=gguf,
            notes=notes,
        )


def _autoround_gguf(source: SourceModel, spec: MethodSpec, samples, work: Path, model_file: Path, log: Log) -> None:
    """Tune with auto-round on exactly our calibration windows (a list of id tensors: it neither re-tokenizes
    nor re-samples them) and export; auto-round names its output folder and file itself, so the one GGUF it
    wrote is moved to `model_file`."""
    import torch
    from auto_round import AutoRound

    fmt = f"gguf:{spec.scheme.lower()}"
    log(f"autoround {spec.label()} with auto-round (calibrating, {spec.iters} iters per block)")
    try:
        tuner = AutoRound(
            str(source.path),
            scheme=fmt,
            iters=spec.iters,
            lr=spec.lr,
            batch_size=spec.batch_size,
            dataset=[torch.as_tensor(row)[None] for row in samples],
            nsamples=len(samples),
            seqlen=samples.shape[1],
            enable_torch_compile=False,  # as for the llmcompressor backend: compile time, no gain on a CPU
        )
        tuner.quantize_and_save(str(work), format=fmt)
    except Exception as exc:
        raise QuantizationError(f"auto-round failed: {exc}") from exc
    written = sorted(work.rglob("*.gguf"))
    if len(written) != 1:
        raise QuantizationError(f"auto-round wrote {len(written)} GGUF files, expected one: {written}")
    written[0].rename(model_file)
    shutil.rmtree(work)
