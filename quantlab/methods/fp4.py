"""`fp4`: 4-bit floating point (E2M1) weights in the two microscaling layouts, by llm-compressor.

- NVFP4: groups of 16 weights share an FP8 (E4M3) scale, under one FP32 scale per tensor.
- MXFP4 (OCP microscaling): groups of 32 share a power-of-two (E8M0) scale.

Each comes as W4A4 (activations quantized the same way: NVFP4's per-tensor activation scale is static, so it is
calibrated; MXFP4's are computed at run time) and as weight-only A16. Only Blackwell GPUs have FP4 tensor
cores (vLLM); elsewhere the weights are decompressed and W4A4 activations are quantized and dequantized in
software, so such speed is emulated. compressed-tensors decompresses FP4 weights to bf16, so these artifacts
keep their unquantized tensors in bf16 and reload only in bf16.
"""

from __future__ import annotations

from quantlab.methods.presets import Preset, PresetBackend

PRESETS = {
    "NVFP4": Preset(
        "NVFP4",
        4.5,
        weights="FP4 E2M1, FP8 scale per 16 + FP32 scale per tensor",
        activations="FP4 E2M1, FP8 scale per 16 computed at run time under a calibrated FP32 scale per tensor",
        group=16,
        calibrated=True,
    ),
    "NVFP4A16": Preset(
        "NVFP4A16", 4.5, weights="FP4 E2M1, FP8 scale per 16 + FP32 scale per tensor", activations=None, group=16
    ),
    "MXFP4": Preset(
        "MXFP4",
        4.25,
        weights="FP4 E2M1, E8M0 (power-of-two) scale per 32",
        activations="FP4 E2M1, E8M0 scale per 32 computed at run time",
        group=32,
    ),
    "MXFP4A16": Preset(
        "MXFP4A16", 4.25, weights="FP4 E2M1, E8M0 (power-of-two) scale per 32", activations=None, group=32
    ),
}


class Fp4LlmCompressor(PresetBackend):
    method = "fp4"
    name = "llmcompressor"
    default = True
    presets = PRESETS
    schemes = tuple(PRESETS)
    default_scheme = "NVFP4"
    # NVFP4's static activation scale is calibrated; a rotation spreads the outliers 4-bit activations clip
    options = frozenset({"scheme", "dtype", "calibration", "rotation"})
    refusal = f"the scheme (--scheme {'|'.join(PRESETS)}) sets bits and scales"
    bf16_only = "compressed-tensors decompresses FP4 weights to bf16, and a model mixing dtypes fails to run"
    summary = (
        "NVFP4 / MXFP4 (W4A4) and NVFP4A16 / MXFP4A16 (weight-only); compressed-tensors nvfp4/mxfp4 "
        "pack-quantized; loads in transformers (bf16), vLLM"
    )
