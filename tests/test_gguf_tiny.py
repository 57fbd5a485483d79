"""gguf/llamacpp on a tiny random Llama whose widths are multiples of 256: conversion, quantization, the
tensor census, the importance matrix file, the llamacpp runtime, and the errors a user can meet."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
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


def test_imatrix_is_llama_imatrix_over_the_calibration_windows(made, quality):
    m = made["Q4_K_M-imatrix"].manifest
    assert m.spec.imatrix and m.calibration is not None and m.gguf.imatrix is not None
    assert m.gguf.imatrix.how.startswith("llama-imatrix (llama.cpp ")
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
    # one chunk per calibration window, every token of every window counted
    assert info["kv"]["imatrix.chunk_count"] == CALIB.n_samples
    assert info["kv"]["imatrix.chunk_size"] == CALIB.seq_len
    names = {t["name"] for t in info["tensors"]}
    model_tensors = {"blk.0.attn_q.weight", "blk.0.ffn_down.weight", "blk.1.attn_output.weight"}
    assert {n + ".in_sum2" for n in model_tensors} <= names and {n + ".counts" for n in model_tensors} <= names
    assert m.gguf.imatrix.tokens == CALIB.n_samples * CALIB.seq_len
    assert m.gguf.imatrix.entries == 2 * 7  # 2 layers × q k v o gate up down (tied output: no entry)
    plain = made["Q4_K_M"].path / "model-Q4_K_M.gguf"
    weighted = made["Q4_K_M-imatrix"].path / "model-Q4_K_M.gguf"
    assert plain.read_bytes() != weighted.read_bytes()  # the quantizer used it
    assert quality["Q4_K_M-imatrix"].quality.vs_baseline.kld_mean <= quality["Q4_K_M"].quality.vs_baseline.kld_mean


def test_llama_imatrix_reads_exactly_the_calibration_ids(made, gguf_tiny_model):
    """The text llama-imatrix reads tokenizes, with llama.cpp's own tokenizer, back to the windows' ids; a
    text that would not is refused rather than re-tokenized."""
    from transformers import AutoTokenizer

    from quantlab.calibration import calibration_samples
    from quantlab.errors import QuantizationError
    from quantlab.llamacpp import imatrix

    tokenizer = AutoTokenizer.from_pretrained(gguf_tiny_model)
    samples, _ = calibration_samples(tokenizer, CALIB)
    f16 = made["F16"].path / "model-F16.gguf"
    text = "".join(tokenizer.decode(row.tolist(), clean_up_tokenization_spaces=False) for row in samples)
    ids, adds_bos = imatrix.llama_tokens(f16, text)
    assert not adds_bos and ids == samples.reshape(-1).tolist()
    letters = np.array([tokenizer.convert_tokens_to_ids(list("hello")) * 2] * 2)  # BPE merges "hello" back
    spelled = "".join(tokenizer.decode(row.tolist()) for row in letters)
    vocab = imatrix.Vocab(f16)
    try:
        with pytest.raises(QuantizationError, match="tokenizes the calibration text differently"):
            imatrix._check_round_trip(vocab, spelled, letters)
    finally:
        vocab.close()


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


def _llama_servers() -> list:
    from tests.test_serve import _processes_mentioning

    return [p for p in _processes_mentioning("llama-server") if p.name() == "llama-server"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_llama_server_batches_answers_and_never_outlives_quantlab(made, sig):
    """`quantlab serve` of a GGUF runs llama.cpp's llama-server; Ctrl-C, SIGTERM, or quantlab killed outright
    (a crash: no Python cleanup runs) all leave no llama-server behind."""
    import httpx
    import psutil

    from quantlab.serve.process import free_port
    from tests.test_serve import _gone, _start_serve_cli

    port = free_port()
    proc = _start_serve_cli(made["Q4_K_M"].path, port)
    try:
        [server] = [c for c in psutil.Process(proc.pid).children(recursive=True) if c.name() == "llama-server"]
        args = server.cmdline()
        slots, ctx = int(args[args.index("--parallel") + 1]), int(args[args.index("--ctx-size") + 1])
        assert (slots, ctx) == (32, 32 * 2048)  # `serve`'s defaults: a slot per request, 2048 tokens each
        body = {"model": "Q4_K_M", "prompt": "hello", "max_tokens": 3, "ignore_eos": True}
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/completions", json=body, timeout=60)
        assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 3
        proc.send_signal(sig)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # say where it hangs: `quantlab serve` dumps its stacks on SIGUSR1
            proc.send_signal(signal.SIGUSR1)
            time.sleep(2)
            proc.kill()
            pytest.fail(
                f"quantlab serve still running 60 s after {sig.name}: {proc.communicate(timeout=30)[1][-4000:]}"
            )
        deadline = time.monotonic() + 15  # after SIGKILL the kernel delivers PDEATHSIG to the server
        while not _gone(server.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == {signal.SIGINT: 0, signal.SIGTERM: 128 + signal.SIGTERM, signal.SIGKILL: -signal.SIGKILL}[sig]
    assert _gone(server.pid) and not _llama_servers()


def test_llama_server_errors_are_one_line(made, tmp_path):
    import socket

    from quantlab.serve.process import free_port

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        proc = run_cli("serve", str(made["Q4_K_M"].path), "--port", str(busy.getsockname()[1]))
    assert proc.returncode == 1 and len(error_lines(proc.stderr)) == 1 and "in use" in proc.stderr
    broken = tmp_path / "broken"
    shutil.copytree(made["Q4_K_M"].path, broken)
    gguf = broken / "model-Q4_K_M.gguf"
    gguf.write_bytes(b"\x00" * gguf.stat().st_size)  # same size: the manifest's size check passes
    proc = run_cli("serve", str(broken), "--port", str(free_port()), "--startup-timeout", "60")
    assert proc.returncode == 1 and len(error_lines(proc.stderr)) == 1, proc.stderr
    assert "llamacpp server" in proc.stderr and not _llama_servers()
    gguf.unlink()
    proc = run_cli("serve", str(broken), "--port", str(free_port()))
    assert proc.returncode == 1 and len(error_lines(proc.stderr)) == 1 and "model-Q4_K_M.gguf" in proc.stderr


def test_a_failed_llama_cpp_build_is_one_line_and_leaves_no_build(tmp_path):
    """A tree whose CMake configuration fails: one error line naming the step and CMake's reason, no build."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "convert_hf_to_gguf.py").write_text("")
    (tree / "CMakeLists.txt").write_text('cmake_minimum_required(VERSION 3.14)\nmessage(FATAL_ERROR "no compiler")\n')
    env = {"QUANTLAB_LLAMACPP_DIR": str(tree), "QUANTLAB_CACHE": str(tmp_path / "cache")}
    proc = run_cli("llamacpp", "build", "--backend", "cpu", env=env)
    assert proc.returncode == 1 and len(error_lines(proc.stderr)) == 1, proc.stderr
    assert "failed at configure" in proc.stderr and "no compiler" in proc.stderr
    builds = list((tmp_path / "cache").glob("llama.cpp/*/build-*"))
    assert [b.suffix for b in builds] == [".log"]  # only the log of the failed build


def _sigint_ignored_and_blocked() -> None:
    """What a child can inherit: SIGINT ignored (a background job of a non-interactive shell) and blocked (a
    spawning thread's mask). Either alone kept `quantlab serve` from ever seeing Ctrl-C in CI."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


def test_ctrl_c_stops_serve_whatever_sigint_state_it_inherits(made):
    from quantlab.serve.process import free_port
    from tests.test_serve import _start_serve_cli

    proc = _start_serve_cli(made["Q4_K_M"].path, free_port(), preexec_fn=_sigint_ignored_and_blocked)
    try:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0 and not _llama_servers()


def _tensor_digests(path) -> dict[str, str]:
    """Each tensor's data, hashed, read with llama.cpp's own gguf-py."""
    code = (
        "import gguf, hashlib, json, sys; r = gguf.GGUFReader(sys.argv[1], 'r'); "
        "print(json.dumps({t.name: hashlib.sha256(bytes(t.data)).hexdigest() for t in r.tensors}))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=tools_env(tools_dir()), check=True
    )
    return json.loads(proc.stdout)


def test_imatrix_exclude_rounds_exactly_those_tensors_without_the_matrix(gguf_tiny_model, tmp_path):
    """A tensor named in --imatrix-exclude is rounded as if no matrix were given, every other one as with it."""
    pure = {"method": "gguf", "scheme": "Q4_K_M", "pure": True}
    blk0 = [f"blk.0.{k}.weight" for k in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up")]
    blk0.append("blk.0.ffn_down.weight")
    specs = {
        "plain": MethodSpec(**pure),
        "weighed": MethodSpec(**pure, imatrix=True, calibration=CALIB),
        "mixed": MethodSpec(**pure, imatrix=True, calibration=CALIB, imatrix_exclude=blk0),
    }
    files = {}
    for name, spec in specs.items():
        artifact = quantize(str(gguf_tiny_model), spec, tmp_path / name)
        files[name] = _tensor_digests(artifact.path / artifact.manifest.gguf.file)
    assert artifact.manifest.spec.imatrix_exclude == blk0
    for tensor, digest in files["mixed"].items():
        like = "plain" if tensor in blk0 else "weighed"
        assert digest == files[like][tensor], tensor
    assert any(files["plain"][t] != files["weighed"][t] for t in blk0)  # the matrix did change them
    assert any(files["plain"][t] != files["weighed"][t] for t in files["plain"] if t.startswith("blk.1."))
