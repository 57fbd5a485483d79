"""fp8, fp4 and bnb on a tiny random Llama: manifests, what the saved config says, reload in a fresh process,
kernel labels, size and error orderings, and the errors for impossible requests."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from quantlab.errors import SpecError
from quantlab.methods import get_backend
from quantlab.methods.bnb import cpu_4bit_kernel_available, cpu_width_problem
from quantlab.models import LinearLayer, ModelInfo
from quantlab.quantizer import quantize
from quantlab.runtimes import select_runtime
from quantlab.runtimes.kernel_labels import native_fp8_eligible
from quantlab.spec import Calibration, MethodSpec

from .conftest import make_tiny_llama, run_cli

W8A8 = ["FP8_DYNAMIC", "FP8_BLOCK"]
W4A4 = ["NVFP4", "MXFP4"]
A16 = ["FP8_W8A16", "NVFP4A16", "MXFP4A16"]
FP8 = ["FP8_DYNAMIC", "FP8_BLOCK", "FP8_W8A16"]
FP4 = ["NVFP4", "NVFP4A16", "MXFP4", "MXFP4A16"]
BNB = ["nf4", "fp4", "nf4-dq", "int8"]
FOUR_BIT = [*FP4, "nf4", "fp4", "nf4-dq", "rtn-w4"]


def _spec(name: str) -> MethodSpec:
    if name in FP8:
        return MethodSpec(method="fp8", scheme=name)
    if name in FP4:
        return MethodSpec(
            method="fp4",
            scheme=name,
            calibration=Calibration(dataset="embedded", n_samples=4, seq_len=64) if name == "NVFP4" else None,
        )
    if name == "rtn-w4":
        return MethodSpec(method="rtn", bits=4, group_size=64)
    if name == "bf16":
        return MethodSpec(method="none", dtype="bf16")
    scheme, _, dq = name.partition("-")
    return MethodSpec(method="bnb", scheme=scheme, double_quant=True if dq else None)


@pytest.fixture(scope="module")
def source(tmp_path_factory, tiny_tokenizer):
    """bf16, like the real default model, and drawn wide enough that quantization error shows in the KLD."""
    return make_tiny_llama(
        tmp_path_factory.mktemp("formats-src") / "model", tiny_tokenizer, dtype="bfloat16", init_std=0.08
    )


@pytest.fixture(scope="module")
def made(source, tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    return {name: quantize(str(source), _spec(name), root / name) for name in [*FP8, *FP4, *BNB, "rtn-w4", "bf16"]}


@pytest.mark.parametrize("name", [*FP8, *FP4])
def test_llmcompressor_manifest_and_config_say_whether_activations_are_quantized(made, name):
    m = made[name].manifest
    assert (m.spec.method, m.spec.backend, m.spec.scheme) == (_spec(name).method, "llmcompressor", name)
    assert m.spec.label() == name and "llmcompressor" in m.libraries and "compressed-tensors" in m.libraries
    assert m.format.startswith("compressed-tensors ") and m.loads_in == ["transformers", "vllm"]
    groups = json.loads((made[name].path / "config.json").read_text())["quantization_config"]["config_groups"]
    activations = [group.get("input_activations") for group in groups.values()]
    assert all(activations) if name in W8A8 + W4A4 else not any(activations)
    assert ("not quantized (A16" in m.notes[0]) == (name in A16)
    assert (m.calibration is not None) == (name == "NVFP4")


def test_fp4_keeps_bf16_and_fp8_formats_are_what_vllm_reads(made):
    for name in FP4:
        assert made[name].manifest.spec.dtype == "bf16"
    assert made["NVFP4"].manifest.format == "compressed-tensors nvfp4-pack-quantized"
    assert made["MXFP4"].manifest.format == "compressed-tensors mxfp4-pack-quantized"
    assert made["FP8_DYNAMIC"].manifest.format == "compressed-tensors float-quantized"


@pytest.mark.parametrize("name", BNB)
def test_bnb_manifest_and_config(made, name):
    m = made[name].manifest
    config = json.loads((made[name].path / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "bitsandbytes" and "bitsandbytes" in m.libraries
    assert m.format == f"bitsandbytes {m.spec.scheme}"
    if name == "int8":
        assert config["load_in_8bit"] and m.spec.double_quant is None and m.spec.compute_dtype is None
    else:
        assert config["bnb_4bit_quant_type"] == m.spec.scheme
        assert config["bnb_4bit_use_double_quant"] is m.spec.double_quant is name.endswith("-dq")
        assert m.spec.compute_dtype == "bf16" == config["bnb_4bit_compute_dtype"].replace("bfloat16", "bf16")


def test_every_artifact_reloads_in_a_fresh_process(made):
    """As a user loads them: `from_pretrained(dir)`, dtype bf16 (what FP4 requires), one forward."""
    code = (
        "import sys, torch; from transformers import AutoModelForCausalLM\n"
        "for path in sys.argv[1:]:\n"
        "    m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval()\n"
        "    with torch.inference_mode(): out = m(torch.arange(1, 17)[None]).logits\n"
        "    assert torch.isfinite(out).all(), path\n"
        "print('ok', len(sys.argv) - 1)"
    )
    paths = [str(made[n].path) for n in [*FP8, *FP4, *BNB]]
    proc = subprocess.run(
        [sys.executable, "-c", code, *paths], capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0 and f"ok {len(paths)}" in proc.stdout, proc.stderr[-3000:]


def _expected_kernel(name: str) -> str:
    if name in W8A8 + W4A4:
        return "emulated"  # no FP8/FP4 matmul on a CPU: activations are quantized and dequantized in software
    if name in A16:
        return "dequantized"
    if name == "int8":
        # bitsandbytes 0.50 routes int8 matmuls to torch._int_mm on AVX-512 hosts only
        return "native" if torch.backends.cpu.get_cpu_capability() == "AVX512" else "dequantized"
    return "native" if cpu_4bit_kernel_available() else "dequantized"


@pytest.mark.parametrize("name", [*FP8, *FP4, *BNB])
def test_kernel_label_on_cpu(made, name):
    session = select_runtime(made[name]).load(made[name], device="cpu")
    try:
        description = session.describe()
        assert description.kernel == _expected_kernel(name), description.kernel_detail
        if description.kernel == "emulated":
            assert "activations quantized and dequantized in software" in description.kernel_detail
            assert ("FP4" if name in W4A4 else "FP8") in description.kernel_detail
        if name in ("nf4", "fp4") and description.kernel == "native":
            assert f"repacked {name} weights" in description.kernel_detail
    finally:
        session.close()


def test_native_fp8_path_only_for_the_scheme_it_computes_exactly(made):
    """transformers' FP8 kernel path quantizes activations per token and reads one scale per row: right for
    FP8_DYNAMIC only; weight-only FP8 would silently become W8A8, block scales would be misread."""

    def config(name):
        return json.loads((made[name].path / "config.json").read_text())["quantization_config"]

    assert native_fp8_eligible(config("FP8_DYNAMIC"))
    for name in ["FP8_BLOCK", "FP8_W8A16", *FP4, "rtn-w4", "nf4"]:
        assert not native_fp8_eligible(config(name)), name
    assert not native_fp8_eligible(None)


def _logits(path, ids):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval()
    with torch.inference_mode():
        return model(ids).logits.float()


def test_every_fp8_scheme_is_closer_to_bf16_than_every_4bit_one(made, source):
    ids = torch.as_tensor(np.random.default_rng(0).integers(1, 1000, size=(4, 64)))
    reference = torch.log_softmax(_logits(source, ids), -1)

    def kld(name):
        logp = torch.log_softmax(_logits(made[name].path, ids), -1)
        return float((reference.exp() * (reference - logp)).sum(-1).mean())

    klds = {name: kld(name) for name in [*FP8, *FOUR_BIT]}
    assert max(klds[n] for n in FP8) < min(klds[n] for n in FOUR_BIT), klds


def test_weight_bytes_order_fp8_below_bf16_and_4bit_below_fp8(made):
    size = {name: a.manifest.weight_bytes for name, a in made.items()}
    assert max(size[n] for n in FP8) < size["bf16"], size
    assert max(size[n] for n in [*FP4, "nf4", "fp4", "nf4-dq"]) < min(size[n] for n in FP8), size
    assert size["nf4-dq"] < size["nf4"]  # double quantization stores the block scales in 8 bits


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (MethodSpec(method="fp8", scheme="FP9"), "no scheme 'FP9'; choose one of FP8_DYNAMIC, FP8_BLOCK, FP8_W8A16"),
        (MethodSpec(method="fp8", bits=8), "takes no --bits"),
        (MethodSpec(method="fp8", calibration=Calibration()), "every FP8 scheme is data-free"),
        (MethodSpec(method="fp4", scheme="MXFP4", calibration=Calibration()), "MXFP4 is data-free"),
        (MethodSpec(method="fp4", dtype="fp32"), "keeps unquantized tensors in bf16, not fp32"),
        (MethodSpec(method="fp4", double_quant=True), "takes no --double-quant"),
        (MethodSpec(method="bnb", scheme="nf3"), "no scheme 'nf3'; choose one of nf4, fp4, int8"),
        (MethodSpec(method="bnb", scheme="int8", double_quant=True), "applies to 4-bit schemes"),
        (MethodSpec(method="bnb", scheme="int8", compute_dtype="bf16"), "int8 takes no --compute-dtype"),
        (MethodSpec(method="bnb", group_size=64), "takes no --group-size"),
        (MethodSpec(method="bnb", calibration=Calibration()), "is data-free"),
        (MethodSpec(method="rtn", double_quant=True), "takes no --double-quant"),
        (MethodSpec(method="gguf", compute_dtype="fp16"), "takes no --compute-dtype"),
    ],
)
def test_impossible_requests_fail_before_loading(spec, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        get_backend(spec.method, spec.backend).normalize(spec)


def test_normalize_fills_the_defaults_it_uses():
    fp4 = get_backend("fp4").normalize(MethodSpec(method="fp4"))
    assert (fp4.scheme, fp4.dtype, fp4.calibration) == ("NVFP4", "bf16", Calibration())
    fp8 = get_backend("fp8").normalize(MethodSpec(method="fp8", scheme="fp8_block"))
    assert (fp8.scheme, fp8.calibration) == ("FP8_BLOCK", None)
    nf4 = get_backend("bnb").normalize(MethodSpec(method="bnb"))
    assert (nf4.scheme, nf4.double_quant) == ("nf4", False)


def test_group_and_block_widths_are_checked_against_the_architecture():
    def info(width):
        layers = [
            LinearLayer(name="model.layers.0.mlp.down_proj", in_features=width, out_features=256),
            LinearLayer(name="model.layers.0.self_attn.k_proj", in_features=256, out_features=width),
        ]
        return ModelInfo(
            architecture="LlamaForCausalLM", model_type="llama", dtype="bf16", n_params=1, linear_layers=layers
        )

    fp8, fp4 = get_backend("fp8"), get_backend("fp4")
    block = fp8.normalize(MethodSpec(method="fp8", scheme="FP8_BLOCK"))
    with pytest.raises(SpecError, match=r"groups of 128 input channels.*in_features 576.*FP8_DYNAMIC or FP8_W8A16"):
        fp8.for_model(block, info(576))
    assert fp8.for_model(block, info(512)).scheme == "FP8_BLOCK"
    mxfp4 = fp4.normalize(MethodSpec(method="fp4", scheme="MXFP4"))
    with pytest.raises(SpecError, match=r"groups of 32 input channels.*in_features 272.*use --scheme NVFP4"):
        fp4.for_model(mxfp4, info(272))
    with pytest.raises(SpecError, match="no scheme of this method fits"):
        fp4.for_model(mxfp4, info(264))


def test_bnb_cpu_width_rule_names_the_layer_and_what_to_do():
    layers = [
        LinearLayer(name="model.layers.0.mlp.up_proj", in_features=256, out_features=512),
        LinearLayer(name="model.layers.0.mlp.down_proj", in_features=288, out_features=256),
        LinearLayer(name="lm_head", in_features=288, out_features=1000),
    ]
    info = ModelInfo(
        architecture="LlamaForCausalLM",
        model_type="llama",
        dtype="bf16",
        n_params=1,
        linear_layers=layers,
        lm_head="lm_head",
    )
    problem = cpu_width_problem(info)
    assert "model.layers.0.mlp.down_proj (in_features 288" in problem and "--scheme int8" in problem
    assert cpu_width_problem(info.model_copy(update={"linear_layers": layers[:1]})) is None


@pytest.mark.skipif(not cpu_4bit_kernel_available(), reason="bitsandbytes' CPU 4-bit kernel is not used here")
def test_bnb_cli_refuses_widths_the_cpu_kernel_cannot_run(tmp_path, tiny_tokenizer):
    odd = make_tiny_llama(tmp_path / "odd", tiny_tokenizer, hidden=288, intermediate=576, heads=4, kv_heads=2)
    proc = run_cli("quantize", str(odd), "--method", "bnb", "--out", str(tmp_path / "q"))
    assert proc.returncode == 1 and not (tmp_path / "q").exists()
    assert "in_features % 64 == 0" in proc.stderr and "Use --scheme int8" in proc.stderr
    assert "Traceback" not in proc.stderr
