"""torchao: int8 schemes quantize on a CPU, load back unmodified and name their kernel from the ops
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


def _standin_spec(scheme: str, group: int | None = None):
    from quantlab.methods.registry import get_backend
    from quantlab.spec import MethodSpec

    spec = get_backend("torchao").resolve(MethodSpec(method="torchao", scheme=scheme, group_size=group))
    return spec.model_copy(update={"dtype": "bf16"})


def test_int4wo_cpu_standin_holds_exactly_the_tinygemm_values(tiny_model):
    """The CPU layout's integers, scales and zeros are those tile_packed_to_4d would store; a layer whose source
    weight differs is named (the comparison can fail)."""
    import torch
    from transformers import AutoModelForCausalLM

    from quantlab.methods.torchao_standin import load_standin, tinygemm_mismatches, tinygemm_values

    standin = load_standin(tiny_model, _standin_spec("int4wo", 64))
    assert type(standin.model.layers[0].mlp.up_proj.weight).__name__ == "Int4OpaqueTensor"
    assert isinstance(standin.lm_head.weight, torch.nn.Parameter)  # transformers' default skip, as on a GPU
    dense = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.bfloat16)
    assert tinygemm_mismatches(dense, standin, 64) == (14, [])
    with torch.no_grad():
        dense.model.layers[1].self_attn.o_proj.weight[3, 5] += 0.5
    assert tinygemm_mismatches(dense, standin, 64) == (14, ["model.layers.1.self_attn.o_proj"])
    # and the CPU kernel multiplies by those values: (q - 8) × scale + zero, tinygemm's float zero point
    layer = standin.model.layers[0].mlp.down_proj
    ints, scale, zero = tinygemm_values(dense.model.layers[0].mlp.down_proj.weight.detach(), 64)
    w = ((ints - 8).double().unflatten(1, (-1, 64)) * scale.double()[..., None] + zero.double()[..., None]).flatten(1)
    x = torch.randn(3, layer.in_features, dtype=torch.bfloat16)
    with torch.inference_mode():
        assert torch.allclose(layer(x).double(), x.double() @ w.T, rtol=0.02, atol=2e-3)


def test_float8dq_cpu_standin_runs_torchaos_fp8_linear_and_lifts_its_check_only_while_loading(tiny_model):
    import torch
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    from quantlab.methods.torchao_standin import load_standin

    standin = load_standin(tiny_model, _standin_spec("float8dq"))
    layer = standin.model.layers[0].mlp.up_proj
    assert type(layer.weight).__name__ == "Float8Tensor" and layer.weight.act_quant_kwargs is not None
    x = torch.randn(5, layer.in_features, dtype=torch.bfloat16)

    def fp8_rows(t):  # per-token E4M3: scale = amax / 448 in the activation's dtype, as torchao computes it
        scale = (t.abs().amax(-1, keepdim=True) / torch.finfo(torch.float8_e4m3fn).max).float()
        return (t.float() / scale).clamp(-448, 448).to(torch.float8_e4m3fn).double() * scale.double()

    dense_w = layer.weight.qdata.double() * layer.weight.scale.double()  # exact; dequantize() rounds to bf16
    with torch.inference_mode():
        out = layer(x).double()
    assert torch.allclose(out, fp8_rows(x) @ dense_w.T, rtol=0.01, atol=1e-4)
    assert not torch.allclose(out, x.double() @ dense_w.T, rtol=1e-3, atol=1e-5)  # activations were quantized
    with pytest.raises(AssertionError, match="compute capability"):
        quantize_(torch.nn.Sequential(torch.nn.Linear(256, 256)), Float8DynamicActivationFloat8WeightConfig(PerRow()))


def test_standins_refuse_what_they_cannot_stand_in_for():
    from quantlab.errors import SpecError
    from quantlab.methods.torchao_standin import standin_config

    with pytest.raises(SpecError, match="needs no stand-in"):
        standin_config(_standin_spec("int8wo"))
    with pytest.raises(SpecError, match="groups of 32, 64, 128, not 256"):
        standin_config(_standin_spec("int4wo", 256))


@pytest.mark.parametrize("scheme", ["int4wo", "float8dq"])
def test_artifact_check_reads_back_the_standins_values_and_names_a_layer_that_differs(tiny_model, tmp_path, scheme):
    """What benchmarks/gpu/compiled_decode.py asks of the real GPU artifacts, exercised here on the stand-ins (CPU
    layouts of the same values); a source weight changed after quantizing must be caught."""
    import shutil

    from safetensors.torch import load_file, save_file

    from quantlab.methods.torchao_standin import artifact_mismatches, load_standin

    group = 64 if scheme == "int4wo" else None
    standin = load_standin(tiny_model, _standin_spec(scheme, group))
    assert artifact_mismatches(standin, tiny_model, group, limit=14) == (14, [])
    changed = tmp_path / "changed"
    shutil.copytree(tiny_model, changed)
    [file] = changed.glob("*.safetensors")
    tensors = load_file(file)
    tensors["model.layers.0.self_attn.k_proj.weight"][7, 3] += 0.05
    save_file(tensors, file, metadata={"format": "pt"})
    assert artifact_mismatches(standin, changed, group, limit=3) == (3, ["model.layers.0.self_attn.k_proj"])
