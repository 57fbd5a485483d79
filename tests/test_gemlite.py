"""`--kernel gemlite`: compressed-tensors weights handed to gemlite's Triton kernels.

gemlite's kernels need a CUDA GPU (importing gemlite queries one), so on a CPU host these tests check what does
not: the weights handed to gemlite (int4/int8 integers with scales and zero points, FP8 weights with scales)
dequantize to exactly what compressed-tensors itself decompresses, the module swap leaves the model computing the
same function (a dense layer built from what gemlite is handed stands in for gemlite's), and `--kernel gemlite`
is refused, in one line and before any weight loads, where it cannot run.
"""

from __future__ import annotations

import pytest

from .conftest import error_lines, run_cli

W4_G128 = {
    "quant_method": "compressed-tensors",
    "config_groups": {
        "group_0": {
            "format": "pack-quantized",
            "input_activations": None,
            "weights": {"type": "int", "num_bits": 4, "strategy": "group", "group_size": 128, "actorder": "static"},
        }
    },
}


def _load(artifact):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(artifact.path).eval()


def handed_over(module):
    """The weight gemlite is handed, dequantized: (W_q - zero) * scale, or FP8 weight * row scale."""
    from quantlab.runtimes.gemlite_kernels import fp8_weights, unpacked

    if not hasattr(module, "weight_packed"):
        weight, scales = fp8_weights(module)
        return weight.float() * scales.float()
    w_q, scales, zeros, _, group = unpacked(module)
    return (w_q.float() - zeros.float().repeat_interleave(group, 1)) * scales.float().repeat_interleave(group, 1)


@pytest.fixture(scope="module")
def fp8(tiny_model, tmp_path_factory):
    from quantlab.quantizer import quantize
    from quantlab.spec import MethodSpec

    root = tmp_path_factory.mktemp("gemlite-fp8")
    schemes = ("FP8_DYNAMIC", "FP8_W8A16")
    return {s: quantize(str(tiny_model), MethodSpec(method="fp8", scheme=s), root / s) for s in schemes}


def _dense(module, device, dtype):
    """What gemlite computes from what it is handed, as a dense layer: the stand-in on a CPU."""
    import torch

    weight = handed_over(module)
    layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=module.bias is not None, device=device)
    layer.weight.data = weight.to(dtype)
    return layer


def assert_unpacked_exactly(artifact) -> int:
    """Every packed linear's (W_q - zero) * scale equals the weight compressed-tensors itself decompresses, bit for
    bit; returns how many linears were compared."""
    import torch

    from quantlab.runtimes.gemlite_kernels import unpacked

    packed, decompressed = _load(artifact), _load(artifact)
    with torch.inference_mode():
        decompressed(input_ids=torch.zeros((1, 4), dtype=torch.long))  # compressed-tensors decompresses here
    checked = 0
    for module_name, module in packed.named_modules():
        if getattr(module, "quantization_scheme", None) is None:
            continue
        if hasattr(module, "weight_packed"):
            w_q, _, _, bits, group = unpacked(module)
            args = module.quantization_scheme.weights
            assert w_q.dtype == torch.uint8 and int(w_q.max()) < 2**bits and bits == args.num_bits
            assert group == (args.group_size or w_q.shape[1])
        else:
            assert module.weight.dtype == torch.float8_e4m3fn
        expected = decompressed.get_submodule(module_name).weight
        assert torch.equal(handed_over(module).to(expected.dtype), expected), module_name
        checked += 1
    return checked


@pytest.mark.parametrize("name", ["w4", "w8", "FP8_DYNAMIC", "FP8_W8A16"])
def test_what_gemlite_is_handed_dequantizes_to_exactly_what_compressed_tensors_decompresses(tiny_benched, fp8, name):
    """w4 is asymmetric (packed zero points), w8 symmetric: both conventions of the offset; FP8 weights go as
    stored. The real model's artifacts (gptq, awq, rtn) are checked the same way in test_slow_calibrated.py."""
    artifact = fp8[name] if name.startswith("FP8") else tiny_benched[0][name]
    assert assert_unpacked_exactly(artifact) == 14  # 2 layers × 7 linears; lm_head stays dense


KINDS = [("w4", "A16W4 int4, groups of 64"), ("FP8_W8A16", "A16W8 FP8 weight-only")]


@pytest.mark.parametrize(("name", "kinds"), KINDS)
def test_repacked_model_computes_what_the_checkpoint_does(tiny_benched, fp8, name, kinds):
    """Weight-only checkpoints: the same weights in every linear give the same logits, bit for bit."""
    import torch

    from quantlab.runtimes.gemlite_kernels import repack

    artifact = fp8[name] if name.startswith("FP8") else tiny_benched[0][name]
    reference, swapped = _load(artifact), _load(artifact)
    assert repack(swapped, "cpu", make_layer=_dense) == (14, kinds)
    assert not hasattr(swapped, "ct_decompress_hook")
    assert not any(hasattr(m, "quantization_scheme") for m in swapped.modules())
    ids = torch.arange(48)[None, :] % 1000
    with torch.inference_mode():
        assert torch.equal(swapped(input_ids=ids).logits, reference(input_ids=ids).logits)


def test_fp8_dynamic_becomes_gemlites_a8w8_kernel(fp8):
    from quantlab.runtimes.gemlite_kernels import describe

    model = _load(fp8["FP8_DYNAMIC"])
    assert describe(model.model.layers[0].mlp.up_proj) == "A8W8 FP8, per-token FP8 activations"


def test_a_layer_gemlite_cannot_build_is_one_line_naming_the_module(tiny_benched):
    from quantlab.errors import BenchError
    from quantlab.runtimes.gemlite_kernels import repack

    def refuses(module, device, dtype):
        raise NotImplementedError("Invalid input shapes\nsecond line")

    with pytest.raises(
        BenchError,
        match=r"could not repack model\.layers\.0\.self_attn\.q_proj: NotImplementedError: "
        r"Invalid input shapes$",
    ):
        repack(_load(tiny_benched[0]["w4"]), "cpu", make_layer=refuses)


def test_label_says_native_only_when_gemlites_op_ran():
    from quantlab.runtimes.gemlite_kernels import GEMLITE_OP
    from quantlab.runtimes.kernel_labels import gemlite_kernel

    kind, detail = gemlite_kernel((14, "A16W4 int4, groups of 128"), {"aten::mm", GEMLITE_OP})
    assert kind == "native" and detail.startswith("gemlite A16W4 int4, groups of 128 (14 modules)")
    kind, detail = gemlite_kernel((14, "A16W4 int4, groups of 128"), {"aten::mm"})
    assert kind == "unknown" and "never called" in detail


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"quant_method": "gptq"}, "this one is gptq"),
        ({"input_activations": {"type": "int", "num_bits": 8}}, "(W8A8) are not supported"),
        ({"weights": {"type": "float", "num_bits": 4, "strategy": "group"}}, "weights are float4"),
        ({"weights": {"type": "float", "num_bits": 8, "strategy": "block"}}, "FP8 weights scaled per block"),
        (
            {
                "weights": {"type": "float", "num_bits": 8, "strategy": "channel"},
                "input_activations": {"type": "float", "num_bits": 8, "strategy": "tensor", "dynamic": False},
            },
            "other than dynamic per-token",
        ),
        ({"weights": {"type": "int", "num_bits": 4, "strategy": "tensor"}}, "scaled per tensor"),
        ({"weights": {"type": "int", "num_bits": 4, "strategy": "group", "actorder": "group"}}, "g_idx"),
        ({}, "cannot run on cpu"),
    ],
)
def test_formats_and_devices_gemlite_cannot_run_are_named(change, reason):
    import copy

    from quantlab.runtimes.gemlite_kernels import problem

    config = copy.deepcopy(W4_G128)
    group = config["config_groups"]["group_0"]
    config.update({k: v for k, v in change.items() if k == "quant_method"})
    group.update({k: v for k, v in change.items() if k != "quant_method"})
    assert reason in problem(config, "cpu")


def test_kernel_gemlite_is_refused_on_a_cpu_in_one_line_before_any_weight_loads(tiny_benched, tmp_path, monkeypatch):
    import transformers

    from quantlab.bench import BenchConfig, bench
    from quantlab.errors import BenchError

    artifact = tiny_benched[0]["w4"]

    def no_loading(*args, **kwargs):
        raise AssertionError("a weight was loaded")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_loading)
    config = BenchConfig(dataset="embedded", ctx=128, max_tokens=512, kernel="gemlite", device="cpu")
    with pytest.raises(BenchError, match="cannot run on cpu"):
        bench([artifact.path], config=config)
    proc = run_cli("bench", str(artifact.path), "--kernel", "gemlite", "--results", str(tmp_path / "r.jsonl"))
    assert proc.returncode == 1 and len(error_lines(proc.stderr)) == 1, proc.stderr
    assert "--kernel gemlite runs Triton GPU kernels" in proc.stderr and not (tmp_path / "r.jsonl").exists()


def test_a_kernel_option_is_its_own_row_in_the_report(tiny_benched):
    from quantlab.report.selection import select
    from quantlab.report.tables import main_table

    made, _, records = tiny_benched
    w4 = next(r for r in records if r.artifact.digest == made["w4"].digest)
    gemlite = w4.model_copy(deep=True)
    gemlite.runtime.kernel_option = "gemlite"
    rows = main_table(select([*records, gemlite]))
    kernels = list(rows["runtime/kernel"])
    assert len(rows) == len(records) + 1
    assert sum(", gemlite" in k for k in kernels) == 1
