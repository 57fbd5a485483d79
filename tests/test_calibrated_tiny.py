"""gptq and awq, every backend, on a tiny random Llama: artifacts, manifests, reload, kernel labels, errors."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from quantlab.errors import BackendUnavailableError, SpecError
from quantlab.methods import get_backend
from quantlab.quantizer import quantize
from quantlab.runtimes import select_runtime
from quantlab.spec import Calibration, MethodSpec

CALIB = Calibration(n_samples=16, seq_len=128)
BACKENDS = [
    ("gptq", "llmcompressor"),
    ("gptq", "gptqmodel"),
    ("awq", "llmcompressor"),
    ("awq", "gptqmodel"),
    ("awq", "autoawq"),
]
EXPECTED_FORMAT = {
    "llmcompressor": "compressed-tensors pack-quantized",
    ("gptq", "gptqmodel"): "gptq format gptq",
    ("awq", "gptqmodel"): "awq format gemm",
    "autoawq": "awq gemm",
}
LIBRARY = {"llmcompressor": "llmcompressor", "gptqmodel": "gptqmodel", "autoawq": "autoawq"}


@pytest.fixture(scope="module")
def artifacts(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("calibrated")
    made = {
        key: quantize(
            str(tiny_model),
            MethodSpec(method=key[0], backend=key[1], bits=4, group_size=64, calibration=CALIB),
            root / "-".join(key),
        )
        for key in BACKENDS
    }
    made["rtn"] = quantize(str(tiny_model), MethodSpec(method="rtn", bits=4, group_size=64), root / "rtn")
    made["base"] = quantize(str(tiny_model), MethodSpec(method="none"), root / "base")
    return made


@pytest.mark.parametrize("key", BACKENDS, ids=lambda k: "/".join(k))
def test_manifest_names_backend_format_calibration_and_versions(artifacts, key):
    m = artifacts[key].manifest
    assert (m.spec.method, m.spec.backend, m.spec.bits, m.spec.group_size) == (*key, 4, 64)
    assert m.format == EXPECTED_FORMAT.get(key, EXPECTED_FORMAT.get(key[1]))
    assert LIBRARY[key[1]] in m.libraries
    assert m.calibration is not None and (m.calibration.n_samples, m.calibration.seq_len) == (16, 128)
    assert m.quantize_seconds > 0
    if key[0] == "gptq":
        assert m.spec.act_order == "static" and m.spec.damp == (0.01 if key[1] == "llmcompressor" else 0.05)
    else:
        assert m.spec.symmetric is False


def test_every_backend_saw_the_same_calibration_tokens(artifacts):
    assert len({artifacts[key].manifest.calibration.token_fingerprint for key in BACKENDS}) == 1


def _logits(path, ids):
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():
        return model(ids).logits.float()


@pytest.mark.parametrize("key", BACKENDS, ids=lambda k: "/".join(k))
def test_reloads_unmodified_in_transformers(artifacts, key):
    ids = torch.arange(2, 130)[None] % 1024
    base, quant = _logits(artifacts["base"].path, ids), _logits(artifacts[key].path, ids)
    assert torch.isfinite(quant).all()
    assert ((quant - base).norm() / base.norm()).item() < 0.5


@pytest.mark.parametrize("backend", ["llmcompressor", "gptqmodel"])
def test_gptq_has_less_output_error_than_rtn(artifacts, tiny_model, backend):
    from transformers import AutoTokenizer

    from quantlab.calibration import calibration_samples

    ids = torch.as_tensor(calibration_samples(AutoTokenizer.from_pretrained(tiny_model), CALIB)[0][:4])
    base = _logits(artifacts["base"].path, ids)
    error = {
        name: ((_logits(artifacts[key].path, ids) - base).norm() / base.norm()).item()
        for name, key in (("gptq", ("gptq", backend)), ("rtn", "rtn"))
    }
    assert error["gptq"] < error["rtn"], error


@pytest.mark.parametrize(
    ("key", "kernel"),
    [
        (("gptq", "llmcompressor"), "dequantized"),
        (("gptq", "gptqmodel"), "native"),
        (("awq", "gptqmodel"), "native"),
        (("awq", "autoawq"), "native"),
    ],
    ids=lambda k: str(k),
)
def test_runtime_names_the_kernel_it_ran(artifacts, key, kernel):
    artifact = artifacts[key]
    session = select_runtime(artifact).load(artifact, device="cpu")
    description = session.describe()
    session.close()
    assert description.kernel == kernel
    if kernel == "native":
        assert "_weight_int4pack_mm_for_cpu" in description.kernel_detail


def test_auto_gptq_is_detected_and_explained(tiny_model, tmp_path):
    availability = get_backend("gptq", "auto-gptq").availability()
    assert not availability.usable
    assert "end-of-life" in availability.reason and "gptqmodel" in availability.reason
    with pytest.raises(BackendUnavailableError, match="gptq/auto-gptq cannot run here"):
        quantize(str(tiny_model), MethodSpec(method="gptq", backend="auto-gptq"), tmp_path / "x")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"method": "gptq", "backend": "gptqmodel", "group_size": 48}, "one of 16, 32, 64"),
        ({"method": "awq", "backend": "gptqmodel", "bits": 8}, "--bits 4, not 8"),
        ({"method": "awq", "backend": "autoawq", "bits": 3}, "--bits 4, not 3"),
        ({"method": "awq", "backend": "gptqmodel", "dtype": "fp32"}, "fp16 or bf16 only"),
        ({"method": "gptq", "group_size": 96}, "does not divide layer"),
    ],
)
def test_impossible_requests_fail_before_loading(tiny_model, tmp_path, spec, needle):
    with pytest.raises(SpecError, match=needle):
        quantize(str(tiny_model), MethodSpec(**spec), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_gptqmodel_default_damp_is_the_librarys():
    from quantlab import compat
    from quantlab.methods import gptqmodel_backend as gm

    with compat.gptqmodel_quietly():
        from gptqmodel import QuantizeConfig

        assert QuantizeConfig(bits=4).damp_percent == gm.DEFAULT_DAMP


def test_checkpoint_configs_are_the_libraries_own(artifacts):
    qc = json.loads((artifacts[("gptq", "gptqmodel")].path / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "gptq" and qc["bits"] == 4 and qc["group_size"] == 64
    qc = json.loads((artifacts[("awq", "autoawq")].path / "config.json").read_text())["quantization_config"]
    assert qc == {**qc, "quant_method": "awq", "version": "gemm", "zero_point": True, "bits": 4, "group_size": 64}


def test_llmcompressor_gptq_weights_are_the_librarys_own(artifacts, tiny_model, tmp_path, monkeypatch):
    """quantlab runs llm-compressor's GPTQ with leaner Hessian copies (`compat.llmcompressor_gptq_lean`): the
    same tensors, byte for byte, as the library's own code makes."""
    from contextlib import nullcontext

    from safetensors.torch import load_file

    from quantlab import compat

    monkeypatch.setattr(compat, "llmcompressor_gptq_lean", nullcontext)
    spec = MethodSpec(method="gptq", backend="llmcompressor", bits=4, group_size=64, calibration=CALIB)
    library = quantize(str(tiny_model), spec, tmp_path / "library")
    ours = load_file(artifacts[("gptq", "llmcompressor")].path / "model.safetensors")
    theirs = load_file(library.path / "model.safetensors")
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
