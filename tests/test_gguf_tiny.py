"""gguf/llamacpp on a tiny random Llama whose widths are multiples of 256: conversion, quantization, the
tensor census, the importance matrix file, the llamacpp runtime, and the errors a user can meet."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from quantlab.bench import BenchConfig, bench
from quantlab.errors import SpecError
from quantlab.llamacpp.ops import GGUF_TOOL
from quantlab.llamacpp.source import tools_dir, tools_env
from quantlab.quantizer import quantize
from quantlab.spec import Calibration, MethodSpec

from .conftest import error_lines, run_cli

# Uses the real default model: its tokenizer (gguf_tiny_model) and, for the refusals, the model itself.
pytestmark = pytest.mark.slow

LADDER = ["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K"]
CALIB = Calibration(dataset="embedded", n_samples=8, seq_len=128)
OPTIONS = BenchConfig(dataset="embedded", ctx=256, max_tokens=2048, speed=False)


@pytest.fixture(scope="module")
def made(gguf_tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf")
    artifacts = {"fp32": quantize(str(gguf_tiny_model), MethodSpec(method="none", dtype="fp32"), root / "fp32")}
    for name in ["F16", *LADDER]:
        artifacts[name] = quantize(str(gguf_tiny_model), MethodSpec(method="gguf", scheme=name), root / name)
    artifacts["Q4_K_M-imatrix"] = quantize(
        str(gguf_tiny_model), MethodSpec(method="gguf", scheme="Q4_K_M", calibration=CALIB), root / "q4km-imatrix"
    )
    artifacts["IQ4_XS"] = quantize(
        str(gguf_tiny_model),
        MethodSpec(method="gguf", scheme="IQ4_XS", imatrix=True, calibration=CALIB),
        root / "iq4xs",
    )
    return artifacts


@pytest.fixture(scope="module")
def quality(made):
    names = [n for n in made if n != "fp32"]
    records = bench([made[n].path for n in names], baseline=made["fp32"].path, config=OPTIONS)
    return {name: r for name, r in zip(names, records, strict=True)}


def test_manifest_records_the_tensor_types_written(made):
    m = made["Q4_K_M"].manifest
    assert m.format == "gguf Q4_K_M" and m.spec.scheme == "Q4_K_M" and not m.spec.imatrix
    assert m.spec.dtype == "fp16"  # quantized from the converter's F16 output
    assert m.gguf.file == "model-Q4_K_M.gguf"
    assert {"Q4_K", "F32"} <= set(m.gguf.tensor_types)  # norms stay F32
    assert sum(m.gguf.tensor_types.values()) == sum(made["F16"].manifest.gguf.tensor_types.values())
    assert m.gguf.fallbacks == []  # every width is a multiple of 256
    # Q4_K_M keeps the (tied) embedding at Q6_K, and here it is most of the model: between 4 and 8 bits.
    assert 4.0 < m.gguf.bits_per_weight < made["Q8_0"].manifest.gguf.bits_per_weight
    assert m.gguf.type_bytes["Q6_K"] > m.gguf.type_bytes["Q4_K"]
    assert "llama-cpp-python" in m.libraries
    assert any(f.path == "model-Q4_K_M.gguf" for f in m.files)
    assert made["Q8_0"].manifest.gguf.tensor_types.get("Q8_0", 0) > 0


def test_file_sizes_fall_along_the_ladder(made):
    sizes = [made[name].manifest.weight_bytes for name in ["F16", *LADDER]]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes), sizes


def test_f16_gguf_matches_the_hf_model_on_identical_ids(quality):
    r = quality["F16"]
    assert r.runtime.runtime == "llamacpp" and r.runtime.kernel == "dense"
    assert abs(r.quality.vs_baseline.delta_ppl_pct) <= 0.1
    assert r.quality.vs_baseline.kld_mean <= 1e-3


def test_kld_grows_down_the_ladder(quality):
    klds = [quality[name].quality.vs_baseline.kld_mean for name in LADDER]
    assert klds == sorted(klds), dict(zip(LADDER, klds, strict=True))
    assert all(quality[name].runtime.kernel == "native" for name in LADDER)


def test_imatrix_is_llamacpp_format_and_changes_the_result(made, quality):
    m = made["Q4_K_M-imatrix"].manifest
    assert m.spec.imatrix and m.calibration is not None and m.gguf.imatrix is not None
    root = tools_dir()
    imatrix_file = made["Q4_K_M-imatrix"].path / "imatrix.gguf"
    proc = subprocess.run(
        [sys.executable, str(GGUF_TOOL), "inspect", str(imatrix_file)],
        capture_output=True,
        text=True,
        env=tools_env(root),
        check=True,
    )
    info = json.loads(proc.stdout)
    assert info["kv"]["general.type"] == "imatrix"
    assert info["kv"]["imatrix.chunk_count"] == CALIB.n_samples
    assert info["kv"]["imatrix.chunk_size"] == CALIB.seq_len
    names = {t["name"] for t in info["tensors"]}
    model_tensors = {"blk.0.attn_q.weight", "blk.0.ffn_down.weight", "blk.1.attn_output.weight"}
    assert {n + ".in_sum2" for n in model_tensors} <= names and {n + ".counts" for n in model_tensors} <= names
    counts = next(t for t in info["tensors"] if t["name"] == "blk.0.attn_q.weight.counts")
    assert counts["n_elements"] == 1 and m.gguf.imatrix.tokens == CALIB.n_samples * CALIB.seq_len
    assert m.gguf.imatrix.entries == 2 * 7  # 2 layers × q k v o gate up down (tied output: no entry)
    plain = made["Q4_K_M"].path / "model-Q4_K_M.gguf"
    weighted = made["Q4_K_M-imatrix"].path / "model-Q4_K_M.gguf"
    assert plain.read_bytes() != weighted.read_bytes()  # the quantizer used it
    assert quality["Q4_K_M-imatrix"].quality.vs_baseline.kld_mean <= quality["Q4_K_M"].quality.vs_baseline.kld_mean


def _llamacpp_reads_imatrix(path) -> dict:
    """Open an imatrix file with llama.cpp's own C GGUF parser (libggml-base, shipped with llama-cpp-python) and
    apply the checks of llama.cpp's imatrix loader (common/imatrix-loader.cpp): the three metadata keys with
    their types, and every `.in_sum2` paired with a `.counts`, both F32."""
    import ctypes
    from pathlib import Path

    import llama_cpp

    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))

    class InitParams(ctypes.Structure):
        _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p)]

    lib.gguf_init_from_file.restype = ctypes.c_void_p
    lib.gguf_init_from_file.argtypes = [ctypes.c_char_p, InitParams]
    lib.gguf_find_key.restype = ctypes.c_int64
    lib.gguf_find_key.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    for name in ("gguf_get_kv_type", "gguf_get_arr_type", "gguf_get_tensor_type"):
        getattr(lib, name).restype = ctypes.c_int
        getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_int64]
    lib.gguf_get_val_u32.restype = ctypes.c_uint32
    lib.gguf_get_val_u32.argtypes = [ctypes.c_void_p, ctypes.c_int64]
    lib.gguf_get_n_tensors.restype = ctypes.c_int64
    lib.gguf_get_n_tensors.argtypes = [ctypes.c_void_p]
    lib.gguf_get_tensor_name.restype = ctypes.c_char_p
    lib.gguf_get_tensor_name.argtypes = [ctypes.c_void_p, ctypes.c_int64]
    lib.gguf_free.argtypes = [ctypes.c_void_p]
    gguf_type_u32, gguf_type_string, gguf_type_array, ggml_type_f32 = 4, 8, 9, 0

    ctx = lib.gguf_init_from_file(str(path).encode(), InitParams(True, None))
    assert ctx, "llama.cpp's GGUF parser rejected the file"
    try:
        datasets = lib.gguf_find_key(ctx, b"imatrix.datasets")
        count = lib.gguf_find_key(ctx, b"imatrix.chunk_count")
        size = lib.gguf_find_key(ctx, b"imatrix.chunk_size")
        assert min(datasets, count, size) >= 0, "missing imatrix metadata"
        assert lib.gguf_get_kv_type(ctx, datasets) == gguf_type_array
        assert lib.gguf_get_arr_type(ctx, datasets) == gguf_type_string
        assert lib.gguf_get_kv_type(ctx, count) == gguf_type_u32 == lib.gguf_get_kv_type(ctx, size)
        tensors = {
            lib.gguf_get_tensor_name(ctx, i).decode(): lib.gguf_get_tensor_type(ctx, i)
            for i in range(lib.gguf_get_n_tensors(ctx))
        }
        assert all(t == ggml_type_f32 for t in tensors.values())
        sums = {n.removesuffix(".in_sum2") for n in tensors if n.endswith(".in_sum2")}
        counts = {n.removesuffix(".counts") for n in tensors if n.endswith(".counts")}
        assert sums == counts and len(sums) * 2 == len(tensors)
        return {
            "entries": sorted(sums),
            "chunk_count": lib.gguf_get_val_u32(ctx, count),
            "chunk_size": lib.gguf_get_val_u32(ctx, size),
        }
    finally:
        lib.gguf_free(ctx)


def test_llamacpp_own_parser_accepts_the_imatrix(made):
    read = _llamacpp_reads_imatrix(made["Q4_K_M-imatrix"].path / "imatrix.gguf")
    assert (read["chunk_count"], read["chunk_size"]) == (CALIB.n_samples, CALIB.seq_len)
    assert "blk.1.ffn_down.weight" in read["entries"] and len(read["entries"]) == 14


def test_iq_type_with_imatrix(made, quality):
    m = made["IQ4_XS"].manifest
    assert m.gguf.tensor_types.get("IQ4_XS", 0) > 0
    assert quality["IQ4_XS"].quality.vs_baseline.kld_mean < quality["Q2_K"].quality.vs_baseline.kld_mean


def test_iq_type_refuses_to_run_without_imatrix(tmp_path):
    with pytest.raises(SpecError, match="needs an importance matrix"):
        quantize("default", MethodSpec(method="gguf", scheme="IQ3_M"), tmp_path / "x")
    proc = run_cli("quantize", "default", "--method", "gguf", "--scheme", "IQ2_M", "--out", str(tmp_path / "y"))
    assert proc.returncode == 1 and len(error_lines(proc.stderr)) == 1, proc.stderr
    assert "needs an importance matrix" in proc.stderr
    assert not (tmp_path / "y").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scheme", "Q9_K"], "unknown GGUF type 'Q9_K'"),
        (["--scheme", "Q8_0", "--imatrix"], "does not use an importance matrix"),
        (["--scheme", "Q4_K_M", "--bits", "4"], "takes no --bits"),
        (["--scheme", "Q4_K_M", "--dtype", "bf16"], "takes no --dtype"),
    ],
)
def test_impossible_requests_fail_in_one_line(tmp_path, args, message):
    out = tmp_path / "out"
    proc = run_cli("quantize", "default", "--method", "gguf", "--out", str(out), *args)
    assert proc.returncode == 1, proc.stderr
    assert len(error_lines(proc.stderr)) == 1 and message in proc.stderr, proc.stderr
    assert not out.exists()


def test_architecture_the_converter_does_not_know(tmp_path, tiny_tokenizer):
    from transformers import AutoTokenizer, OPTConfig, OPTForCausalLM

    model_dir = tmp_path / "opt"
    OPTForCausalLM(
        OPTConfig(
            vocab_size=1024,
            hidden_size=256,
            ffn_dim=512,
            num_hidden_layers=1,
            num_attention_heads=4,
            word_embed_proj_dim=256,
        )
    ).save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(tiny_tokenizer).save_pretrained(model_dir)
    proc = run_cli("quantize", str(model_dir), "--method", "gguf", "--scheme", "Q8_0", "--out", str(tmp_path / "o"))
    assert proc.returncode == 1 and len(error_lines(proc.stderr)) == 1, proc.stderr
    assert "does not support OPTForCausalLM" in proc.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("damage", ["truncate", "garble"])
def test_corrupt_gguf_fails_in_one_line(made, tmp_path, damage):
    copy = tmp_path / "q8"
    shutil.copytree(made["Q8_0"].path, copy)
    model = copy / "model-Q8_0.gguf"
    data = model.read_bytes()
    if damage == "truncate":
        model.write_bytes(data[: len(data) // 2])
    else:
        model.write_bytes(b"\0" * 64 + data[64:])  # same size: only the content check can tell
    results = tmp_path / "r.jsonl"
    proc = run_cli(
        "bench",
        str(copy),
        "--dataset",
        "embedded",
        "--ctx",
        "128",
        "--max-tokens",
        "512",
        "--no-speed",
        "--results",
        str(results),
    )
    assert proc.returncode == 1 and len(error_lines(proc.stderr)) == 1, proc.stderr
    assert "model-Q8_0.gguf" in proc.stderr
    assert not results.exists()


def test_speed_runs_at_batch_one_and_says_it_does_not_batch(made, tmp_path):
    [r] = bench(
        [made["Q4_K_M"].path],
        config=BenchConfig(
            dataset="embedded",
            max_tokens=1024,
            batch_sizes=[1, 4],
            prompt_tokens=32,
            new_tokens=8,
            warmup=1,
            repeats=2,
            quality=False,
        ),
    )
    assert [p.batch_size for p in r.speed] == [1]
    assert r.speed[0].decode_tok_s.median > 0 and r.memory.peak_bytes > 0
    assert "not batched" in r.runtime.batching and r.runtime.threads >= 1


def test_report_shows_the_census(quality, tmp_path):
    from quantlab.report import markdown

    text = markdown(list(quality.values()))
    assert "GGUF: tensor types as written" in text and "Q4_K×" in text


def test_types_of_one_source_share_one_f16_conversion(made, gguf_tiny_model, tmp_path):
    from quantlab.llamacpp import ops

    said: list[str] = []
    first = ops.converted_f16(str(gguf_tiny_model), said.append)
    assert ops.converted_f16(str(gguf_tiny_model), said.append) == first and first.is_file()
    assert said[-1] == "reusing this process's F16 conversion of the source"
    changed = tmp_path / "model"
    shutil.copytree(gguf_tiny_model, changed)
    (changed / "config.json").write_text((changed / "config.json").read_text() + "\n")
    said.clear()
    again = ops.converted_f16(str(changed), said.append)
    assert said == ["converting to GGUF F16 with llama.cpp's convert_hf_to_gguf.py"]  # a changed source converts
    assert again.is_file() and list(again.parent.glob("*.gguf")) == [again]  # one conversion kept at a time
