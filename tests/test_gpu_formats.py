"""On a GPU with FP8 tensor cores: FP8_DYNAMIC runs through a native FP8 matmul, computes what the emulated CPU
path computes, and the schemes that path would change stay off it. Skipped without such a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from quantlab.env import fp8_hardware
from quantlab.quantizer import quantize
from quantlab.runtimes import select_runtime
from quantlab.spec import MethodSpec

from .conftest import make_tiny_llama

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not (torch.cuda.is_available() and fp8_hardware("cuda:0")),
        reason="needs a CUDA GPU with FP8 tensor cores (compute capability >= 8.9)",
    ),
]


@pytest.fixture(scope="module")
def fp8(tmp_path_factory, tiny_tokenizer):
    root = tmp_path_factory.mktemp("gpu-fp8")
    source = make_tiny_llama(root / "src", tiny_tokenizer, dtype="bfloat16", init_std=0.08)
    made = {
        scheme: quantize(str(source), MethodSpec(method="fp8", scheme=scheme), root / scheme)
        for scheme in ("FP8_DYNAMIC", "FP8_W8A16", "FP8_BLOCK")
    }
    made["bf16"] = quantize(str(source), MethodSpec(method="none", dtype="bf16"), root / "bf16")
    return made


def _logits(artifact, device):
    session = select_runtime(artifact).load(artifact, device=device)
    try:
        ids = np.random.default_rng(0).integers(1, 1000, size=128)
        return session.describe(), torch.log_softmax(session.logits(ids).float().cpu(), -1)
    finally:
        session.close()


def _kld(p_log, q_log) -> float:
    return float((p_log.exp() * (p_log - q_log)).sum(-1).mean())


def test_fp8_dynamic_is_native_on_gpu_and_matches_the_emulated_path(fp8):
    gpu, gpu_fp8 = _logits(fp8["FP8_DYNAMIC"], "cuda:0")
    cpu, cpu_fp8 = _logits(fp8["FP8_DYNAMIC"], "cpu")
    assert gpu.kernel == "native" and "CompressedTensorsFP8Linear" in gpu.kernel_detail
    assert cpu.kernel == "emulated"
    _, gpu_bf16 = _logits(fp8["bf16"], "cuda:0")
    _, cpu_bf16 = _logits(fp8["bf16"], "cpu")
    native_error, emulated_error = _kld(gpu_bf16, gpu_fp8), _kld(cpu_bf16, cpu_fp8)
    # The same format computed two ways: the native kernel's error against bf16 is the emulated one's, up to
    # accumulation order and activation-scale rounding, and far from zero (it really is FP8).
    assert 0.5 < native_error / emulated_error < 2, (native_error, emulated_error, _kld(cpu_fp8, gpu_fp8))


@pytest.mark.parametrize("scheme", ["FP8_W8A16", "FP8_BLOCK"])
def test_schemes_the_fp8_kernel_path_would_change_stay_on_compressed_tensors(fp8, scheme):
    description, _ = _logits(fp8[scheme], "cuda:0")
    assert description.kernel == ("dequantized" if scheme == "FP8_W8A16" else "emulated"), description
