"""Memory fit against values computed by hand from the published Llama-3.1 configs (written here, no download).

Llama-3.1-8B: vocab 128256, hidden 4096, intermediate 14336, 32 layers, 32 heads, 8 KV heads, untied head.
  embeddings + head = 2 × 128256 × 4096 = 1,050,673,152
  per layer: q,o 2 × 4096² + k,v 2 × 4096 × 1024 + mlp 3 × 4096 × 14336 = 218,103,808 linear + 8,192 norms
  total = 1,050,673,152 + 32 × 218,112,000 + 4,096 = 8,030,261,248; linear (head excluded) = 6,979,321,856
  KV per token (bf16) = 32 layers × 8 × 128 × 2 (K,V) × 2 bytes = 131,072
Llama-3.1-70B: hidden 8192, intermediate 28672, 80 layers, 64 heads, 8 KV heads.
  total = 70,553,706,496; linear = 80 × 855,638,016 = 68,451,041,280; KV per token = 80 × 8 × 128 × 4 = 327,680
"""

from __future__ import annotations

import pytest
from transformers import LlamaConfig

from quantlab import memfit
from quantlab.rigs import get_rig

from .conftest import run_cli

LLAMA_8B = dict(
    vocab_size=128256,
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    tie_word_embeddings=False,
)
LLAMA_70B = dict(
    vocab_size=128256,
    hidden_size=8192,
    intermediate_size=28672,
    num_hidden_layers=80,
    num_attention_heads=64,
    num_key_value_heads=8,
    tie_word_embeddings=False,
)


@pytest.fixture(scope="module")
def arch8():
    return memfit.architecture(LlamaConfig(**LLAMA_8B))


@pytest.fixture(scope="module")
def arch70():
    return memfit.architecture(LlamaConfig(**LLAMA_70B))


def test_architecture_matches_hand_counts(arch8, arch70):
    assert (arch8.n_params, arch8.linear_params) == (8_030_261_248, 6_979_321_856)
    assert (arch8.n_layers, arch8.n_kv_heads, arch8.head_dim) == (32, 8, 128)
    assert (arch70.n_params, arch70.linear_params) == (70_553_706_496, 68_451_041_280)


def test_kv_cache_bytes_per_token(arch8, arch70):
    assert memfit.kv_bytes_per_token(arch8) == 131_072
    assert memfit.kv_bytes_per_token(arch8, "fp8") == 65_536
    assert memfit.kv_bytes_per_token(arch70) == 327_680


def test_70b_fp16_does_not_fit_one_h100(arch70):
    f = memfit.footprint(arch70, weight_bits=16, batch=1, ctx=4096, rig=get_rig("h100"))
    assert f.weight_bytes == 141_107_412_992  # 2 bytes × 70,553,706,496
    assert f.kv_bytes == 327_680 * 4096
    assert f.capacity_bytes == 72_000_000_000 and f.fits is False
    assert "does NOT fit" in f.verdict()


def test_70b_int4_fits_one_h100_but_not_one_4090(arch70):
    bits = 4 + 16 / 128  # int4, one fp16 scale per 128 weights
    expected = round(68_451_041_280 * bits / 8 + (70_553_706_496 - 68_451_041_280) * 2)
    on_h100 = memfit.footprint(arch70, weight_bits=bits, ctx=8192, rig=get_rig("h100"))
    assert on_h100.weight_bytes == expected == 39_500_398_592 and on_h100.fits
    assert memfit.footprint(arch70, weight_bits=bits, rig=get_rig("rtx4090")).fits is False


def test_batch_and_context_scale_the_kv_cache(arch8):
    one = memfit.footprint(arch8, batch=1, ctx=8192)
    many = memfit.footprint(arch8, batch=32, ctx=8192)
    assert one.weight_bytes == 16_060_522_496 and one.kv_bytes == 131_072 * 8192
    assert many.kv_bytes == 32 * one.kv_bytes  # 34.4 GB of KV
    h100 = get_rig("h100")
    assert not memfit.footprint(arch8, batch=64, ctx=8192, rig=h100).fits  # 84.8 GB > 72 usable
    # an FP8 KV cache halves it: 16.1 + 34.4 GB
    assert memfit.footprint(arch8, batch=32, ctx=8192, rig=h100).fits
    assert memfit.footprint(arch8, batch=64, ctx=8192, kv_dtype="fp8", rig=h100).fits


def test_measured_artifact_bytes_replace_the_estimate(arch8):
    f = memfit.footprint(arch8, measured_weight_bytes=9_084_014_440, rig=get_rig("rtx4090"))
    assert f.weight_bytes == 9_084_014_440 and f.fits


def test_fit_cli_on_an_artifact_and_its_errors(tmp_path, tiny_model):
    from quantlab.quantizer import quantize
    from quantlab.spec import MethodSpec

    artifact = quantize(str(tiny_model), MethodSpec(method="none", dtype="bf16"), tmp_path / "a")
    proc = run_cli("fit", str(artifact.path), "--rig", "h100", "--rig", "rtx4090", "--batch", "4", "--ctx", "256")
    assert proc.returncode == 0, proc.stderr
    assert "h100" in proc.stdout and "rtx4090" in proc.stdout and "measured artifact weight bytes" in proc.stdout
    bad = run_cli("fit", str(artifact.path), "--rig", "tpu9")
    assert bad.returncode == 1 and "unknown rig 'tpu9'" in bad.stderr
    bad = run_cli("fit", str(artifact.path), "--kv-dtype", "int2")
    assert bad.returncode == 1 and "--kv-dtype: one of fp32, bf16, fp16, fp8, q8_0, q4_0, not 'int2'" in bad.stderr


def test_quality_measurement_holds_what_the_runtime_holds(arch8):
    """One window's logits as each runtime keeps them, and on a rig without GPUs the host's rows in the same memory."""
    assert arch8.vocab_size == 128_256 and arch8.dtype == "fp32"  # the config names no dtype: torch's default
    rows = memfit.window_rows_bytes(128_256, 256)
    assert rows == 255 * 128_256 * 4
    fp32 = memfit.quality_footprint(arch8, runtime="transformers", role="alone", ctx=256, compute_dtype="fp32")
    assert fp32.logits_bytes == 256 * 128_256 * 4  # `.float()` of float32 logits is no copy
    assert fp32.host_bytes == rows and fp32.fits is None
    bf16 = memfit.quality_footprint(arch8, runtime="transformers", role="scored", ctx=256, compute_dtype="bf16")
    assert bf16.logits_bytes == 256 * 128_256 * 6 and bf16.host_bytes == rows
    assert bf16.needed_bytes == bf16.memory.weight_bytes + 131_072 * 256 + bf16.logits_bytes
    gguf = memfit.quality_footprint(arch8, runtime="llamacpp", role="scored", ctx=256, compute_dtype="bf16")
    assert gguf.memory.kv_bytes == 131_072 * 2048  # the session's 2048-token speed context, which it reuses
    assert gguf.logits_bytes == 512 * 128_256 * 4 and gguf.host_bytes == rows + 512 * 128_256 * 4
    cpu = memfit.quality_footprint(
        arch8, runtime="transformers", role="scored", ctx=256, compute_dtype="bf16", rig=get_rig("cpu"), gpus=1
    )
    assert cpu.needed_bytes == bf16.needed_bytes + bf16.host_bytes  # one memory
    making = memfit.quality_footprint(arch8, runtime="transformers", role="reference", ctx=256, compute_dtype="bf16")
    assert making.host_bytes == 2 * rows  # one window written while the next is computed
    assert memfit.reference_bytes(128_256, 256, 3) == 3 * rows + 3 * 256 * 4
