"""`fp8`: 8-bit floating point (E4M3) weights, with or without FP8 activations, by llm-compressor.

Saved as compressed-tensors `float-quantized`: vLLM runs W8A8 on FP8 tensor cores (compute capability ≥ 8.9:
Ada, Hopper, Blackwell) and weight-only FP8 through its FP8 Marlin kernel on older GPUs; transformers runs W8A8
FP8 natively on the same GPUs when asked to (`CompressedTensorsConfig(use_optimized_inference=True)`, which the
quantlab runtime does) and otherwise decompresses the weights. Every scheme here is data-free: the weight
scales come from the weights, the activation scales are computed per token (or per 128-group) at run time.
"""

from __future__ import annotations

from quantlab.methods.presets import Preset, PresetBackend

PRESETS = {
    "FP8_DYNAMIC": Preset(
        "FP8_DYNAMIC",
        8.0,
        weights="FP8 E4M3, one scale per output channel",
        activations="FP8 E4M3, scale computed per token at run time",
    ),
    # The activations' 128-channel groups must tile every input width (compressed-tensors fails at the first
    # forward otherwise), and the weights' 128-row blocks every output width (as vLLM's block kernels require).
    "FP8_BLOCK": Preset(
        "FP8_BLOCK",
        8.0,
        weights="FP8 E4M3, one scale per 128×128 block",
        activations="FP8 E4M3, scale computed per 128-channel group of each token at run time",
        group=128,
        out_block=128,
    ),
    "FP8_W8A16": Preset(
        "FP8_DYNAMIC",
        8.0,
        weights="FP8 E4M3, one scale per output channel",
        activations=None,
        weight_only_variant=True,
    ),
}


class Fp8LlmCompressor(PresetBackend):
    method = "fp8"
    name = "llmcompressor"
    default = True
    presets = PRESETS
    schemes = tuple(PRESETS)
    default_scheme = "FP8_DYNAMIC"
    options = frozenset({"scheme", "dtype"})  # no FP8 scheme is calibrated
    refusal = f"the scheme (--scheme {'|'.join(PRESETS)}) sets bits and scales, and every FP8 scheme is data-free"
    summary = (
        "FP8_DYNAMIC (W8A8, per-token activations), FP8_BLOCK (128×128 blocks), FP8_W8A16 (weight-only); "
        "compressed-tensors float-quantized; loads in transformers, vLLM"
    )
