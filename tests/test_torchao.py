"""torchao (issue 17): int8 schemes quantize on a CPU, load back unmodified and name their kernel from the ops
that ran; the CUDA-only schemes are refused on a CPU host before any weight loads."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from .conftest import error_lines, run_cli


@pytest.fixture(scope="module")
def made(tiny_model, tmp_path_factory):
    from quantlab.quantizer import quantize
    from quantlab.spec import MethodSpec

    root = tmp_path_factory.mktemp("torchao")
    specs = {
        "fp32": MethodSpec(method="none", dtype="fp32"),
        "int8wo": MethodSpec(method="torchao", scheme="int8wo"),
        "int8dq": MethodSpec(method="torchao", scheme="int8dq"),
    }
    return {name: quantize(str(tiny_model), spec, root / name) for name, spec in specs.items()}


def test_int8_schemes_load_unmodified_score_close_and_say_which_kernel_ran(made):
    import torch
    from transformers import AutoModelForCausalLM

    from quantlab.runtimes import select_runtime

    ids = torch.arange(64)[None, :] % 1000
    with torch.inference_mode():
        ref = AutoModelForCausalLM.from_pretrained(made["fp32"].path).eval()(ids).logits.log_softmax(-1)
    kernels = {}
    for scheme in ("int8wo", "int8dq"):
        artifact = made[scheme]
        assert artifact.manifest.format == f"torchao {scheme}" and "vllm" in artifact.manifest.loads_in
        config = json.loads((artifact.path / "config.json").read_text())["quantization_config"]
        assert config["quant_method"] == "torchao"
        assert list(artifact.path.glob("*.safetensors")) and not list(artifact.path.glob("*.bin"))
        with torch.inference_mode():
            model = AutoModelForCausalLM.from_pretrained(artifact.path).eval()
            assert type(model.model.layers[0].mlp.up_proj.weight).__name__ == "Int8Tensor"
            logp = model(ids).logits.log_softmax(-1)
        kld = torch.nn.functional.kl_div(logp, ref, log_target=True, reduction="none").sum(-1).mean().item()
        assert 0 < kld < 1e-3, (scheme, kld)
        session = select_runtime(artifact, None).load(artifact, device="cpu")
        timing = session.timed_generate(np.asarray(ids[:, :16]), 4)
        assert timing.tokens.shape == (1, 4)
        # bytes per decoded token count the int8 payload and its scales, not the dense shape's fp32 bytes
        linear = sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))
        weights = session.bytes_per_token(16, 4).weights
        assert linear <= weights < 1.2 * linear + 4 * 1024 * 256, (weights, linear)
        kernels[scheme] = session.describe()
    assert kernels["int8dq"].kernel == "native" and "aten::_int_mm" in kernels["int8dq"].kernel_detail
    assert kernels["int8wo"].kernel == "dequantized" and "Int8Tensor" in kernels["int8wo"].kernel_detail
    assert made["int8wo"].manifest.spec.label() == "int8wo per-channel"


@pytest.mark.parametrize("scheme", ["int4wo", "float8dq"])
def test_cuda_schemes_are_refused_on_a_cpu_host_before_any_weight_loads(tiny_model, tmp_path, scheme):
    out = tmp_path / scheme
    proc = run_cli("quantize", str(tiny_model), "--method", "torchao", "--scheme", scheme, "--out", str(out))
    assert proc.returncode == 1 and len(error_lines(proc.stderr)) == 1, proc.stderr
    assert "needs a CUDA GPU" in proc.stderr and not out.exists()


def test_an_artifact_the_device_cannot_run_is_refused_before_loading(made, tmp_path):
    """A float8dq artifact can only be made on a GPU; its manifest is what the refusal reads, so an int8dq
    artifact relabelled float8dq stands in for one (its weights are never read: that is the point)."""
    fake = tmp_path / "float8dq"
    shutil.copytree(made["int8dq"].path, fake)
    manifest = json.loads((fake / "quantlab.json").read_text())
    manifest["spec"]["scheme"] = "float8dq"
    (fake / "quantlab.json").write_text(json.dumps(manifest))
    results = tmp_path / "r.jsonl"
    proc = run_cli("bench", str(fake), "--device", "cpu", "--results", str(results))
    assert proc.returncode == 1 and len(error_lines(proc.stderr)) == 1, proc.stderr
    assert "needs a CUDA GPU" in proc.stderr and "cannot run on cpu" in proc.stderr and not results.exists()
