"""quantize → artifact → runtime → results → report on a tiny random Llama (plumbing, not quality)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from quantlab.bench import BenchConfig, bench
from quantlab.quantizer import quantize
from quantlab.report import csv, html, markdown, select
from quantlab.report.tables import MAIN_COLUMNS
from quantlab.results import read_results
from quantlab.spec import MethodSpec
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def tiny_artifacts(tiny_model, tiny_benched, tmp_path_factory):
    per_channel = MethodSpec(method="rtn", bits=4, group_size=-1)
    return {**tiny_benched[0], "w4pc": quantize(str(tiny_model), per_channel, tmp_path_factory.mktemp("arts") / "w4pc")}


def test_rtn_manifest_and_format(tiny_artifacts):
    m = tiny_artifacts["w4"].manifest
    assert (m.spec.method, m.spec.backend, m.spec.bits, m.spec.group_size, m.spec.symmetric) == (
        "rtn",
        "llmcompressor",
        4,
        64,
        False,
    )
    assert m.format == "compressed-tensors pack-quantized"
    assert "llmcompressor" in m.libraries and "compressed-tensors" in m.libraries
    config = json.loads((tiny_artifacts["w4"].path / "config.json").read_text())
    qc = config["quantization_config"]
    weights = qc["config_groups"]["group_0"]["weights"]
    assert qc["quant_method"] == "compressed-tensors"
    assert (weights["num_bits"], weights["group_size"], weights["symmetric"]) == (4, 64, False)
    assert qc["ignore"] == ["lm_head"]
    assert tiny_artifacts["w4pc"].manifest.spec.label() == "w4 per-channel sym"


def test_weight_bytes_shrink_with_bits(tiny_artifacts):
    sizes = {k: a.manifest.weight_bytes for k, a in tiny_artifacts.items()}
    assert sizes["w4"] < sizes["w8"] < sizes["base"]


@pytest.mark.parametrize("name", ["w8", "w4", "w4pc"])
def test_rtn_reloads_unmodified_and_stays_close(tiny_artifacts, name):
    base = AutoModelForCausalLM.from_pretrained(tiny_artifacts["base"].path)
    quant = AutoModelForCausalLM.from_pretrained(tiny_artifacts[name].path)
    ids = torch.arange(64)[None] % 1024
    with torch.no_grad():
        a, b = base(ids).logits.float(), quant(ids).logits.float()
    assert torch.isfinite(b).all()
    err = ((a - b).norm() / a.norm()).item()
    assert 0 < err < (0.05 if name == "w8" else 0.3)


def test_bench_records_and_report(tiny_benched):
    made, results, records = tiny_benched
    assert len(records) == 3 and len(read_results(results)) == 3
    base, w8, w4 = records
    assert base.quality.vs_baseline.kld_mean == pytest.approx(0, abs=1e-6)
    assert base.quality.vs_baseline.top1_agreement == 1.0
    assert 0 < w8.quality.vs_baseline.kld_mean < w4.quality.vs_baseline.kld_mean
    assert base.quality.tokens_scored == 4 * 127
    assert len({r.settings.token_fingerprint for r in records}) == 1
    for r in records:
        assert [p.batch_size for p in r.speed] == [1, 2]
        assert all(p.decode_tok_s.n == 2 and p.decode_tok_s.min <= p.decode_tok_s.median for p in r.speed)
        assert r.memory.kind == "cpu-peak-rss-fresh-process"
        assert r.memory.peak_bytes >= r.memory.after_load_bytes > r.memory.before_load_bytes
        assert r.rig.name == "cpu" and r.runtime.device == "cpu" and r.runtime.threads >= 1
        cost = r.cost[0]
        assert cost.usd_per_1m_tokens == pytest.approx(r.rig.price_per_hour / (cost.tokens_per_second * 3600) * 1e6)
    assert base.runtime.kernel == "dense" and w4.runtime.kernel == "dequantized"
    assert "decompressed" in w4.runtime.kernel_detail
    for r in records:
        roof = r.roofline
        assert roof is not None and 0 < roof.pct_of_limit <= 100 and roof.bandwidth_gb_s > 0
        assert roof.achieved_tok_s == r.speed[0].decode_tok_s.median
        assert roof.limit_tok_s == pytest.approx(roof.bandwidth_gb_s * 1e9 / roof.bytes_per_token, rel=1e-3)
    # fp32 tiny model, untied: every parameter but the input embedding, plus the KV cache (2 layers × 2 KV heads
    # × head dim 64 × K,V × 4 bytes per position, at 16 + 4 // 2 positions)
    n_bytes = sum(t.numel() * 4 for name, t in _state_dict(made["base"].path).items() if "embed_tokens" not in name)
    assert base.roofline.bytes_per_token == n_bytes + 2 * 2 * 64 * 2 * 4 * 18
    # a model decompressed at load reads float weights, not its 4-bit ones: no fewer bytes than the base
    assert w4.roofline.bytes_per_token >= base.roofline.bytes_per_token

    md = markdown(select(read_results(results)))
    for column in MAIN_COLUMNS:
        assert column in md
    assert "$/1M tokens = price_per_hour / (tokens_per_second × 3600) × 1e6" in md
    assert "Kernel 'dequantized'" in md
    assert re.search(r"^- †1 rtn \(llmcompressor\) w\d .* on transformers, kernel 'dequantized'", md, re.M)
    table = csv(records)
    assert table.splitlines()[0].startswith("method,scheme,size on disk MB")
    assert "<table" in html(records)


def test_report_keeps_the_newest_record_per_configuration(tiny_artifacts, tmp_path):
    results = tmp_path / "r.jsonl"
    options = BenchConfig(dataset="embedded", ctx=128, max_tokens=256, speed=False)
    bench([tiny_artifacts["w8"].path], config=options, results_path=results)
    bench([tiny_artifacts["w8"].path], config=options, results_path=results)
    every = read_results(results)
    assert len(every) == 2
    assert select(every) == [max(every, key=lambda r: r.timestamp)]
    assert len(select(every, latest_only=False)) == 2


def test_cli_end_to_end(tiny_model, tmp_path):
    art = tmp_path / "w4"
    proc = run_cli(
        "quantize", str(tiny_model), "--method", "rtn", "--bits", "4", "--group-size", "128", "--out", str(art)
    )
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stderr
    again = ("quantize", str(tiny_model), "--method", "rtn", "--bits", "4", "--group-size", "128", "--out", str(art))
    proc = run_cli(*again, "--force", "--no-force")  # the negative wins, as for every other --no-X
    assert proc.returncode == 1 and "already exists" in proc.stderr.lower(), proc.stderr
    assert run_cli(*again, "--force").returncode == 0
    results = tmp_path / "r.jsonl"
    proc = run_cli(
        "bench",
        str(art),
        "--dataset",
        "embedded",
        "--ctx",
        "64",
        "--max-tokens",
        "256",
        "--batch-sizes",
        "1",
        "--prompt-tokens",
        "8",
        "--new-tokens",
        "3",
        "--repeats",
        "1",
        "--results",
        str(results),
    )
    assert proc.returncode == 0, proc.stderr
    assert "| rtn (llmcompressor) | w4 g128 sym" in proc.stdout
    for fmt, marker in (("md", "| method"), ("csv", "method,scheme"), ("html", "<table")):
        out = tmp_path / f"report.{fmt}"
        proc = run_cli("report", str(results), "--format", fmt, "--out", str(out))
        assert proc.returncode == 0, proc.stderr
        assert marker in out.read_text()


def test_methods_and_rigs_commands():
    proc = run_cli("methods")
    assert proc.returncode == 0
    assert "none" in proc.stdout and "rtn" in proc.stdout and "llmcompressor" in proc.stdout
    proc = run_cli("methods", "--format", "json")
    data = json.loads(proc.stdout)
    rows = {(r["method"], r["backend"]): r for r in data["methods"]}
    assert set(rows) == {
        ("none", "transformers"),
        ("rtn", "llmcompressor"),
        ("gptq", "llmcompressor"),
        ("gptq", "gptqmodel"),
        ("gptq", "auto-gptq"),
        ("autoround", "llmcompressor"),
        ("autoround", "autoround"),
        ("awq", "llmcompressor"),
        ("awq", "gptqmodel"),
        ("awq", "autoawq"),
        ("gguf", "llamacpp"),
        ("fp8", "llmcompressor"),
        ("fp4", "llmcompressor"),
        ("bnb", "bitsandbytes"),
        ("torchao", "torchao"),
    }
    unusable = {key for key, row in rows.items() if not row["usable"]}
    assert unusable == {("gptq", "auto-gptq")}, "everything else installs with '.[all]' and runs on CPU"
    # make setup builds llama.cpp's tools; methods says where, from which commit (the runtime's), for which backend
    from quantlab.llamacpp import build, source

    tools = {t["tool"]: t for t in data["llamacpp_tools"]}
    assert set(tools) == set(build.TOOLS)
    commit = source.tree_commit(source.runtime_version())
    assert commit not in ("", "unknown")
    for row in tools.values():
        assert row["built"] and Path(row["path"]).is_file(), row
        assert (row["commit"], row["backend"]) == (commit, build.backend())
    assert all(bool(row["why_not"]) != row["usable"] for row in rows.values())
    assert rows[("gptq", "auto-gptq")]["legacy"] and rows[("awq", "autoawq")]["legacy"]
    assert [key for key, row in rows.items() if row["default"]] == [
        ("autoround", "llmcompressor"),
        ("awq", "llmcompressor"),
        ("bnb", "bitsandbytes"),
        ("fp4", "llmcompressor"),
        ("fp8", "llmcompressor"),
        ("gguf", "llamacpp"),
        ("gptq", "llmcompressor"),
        ("none", "transformers"),
        ("rtn", "llmcompressor"),
        ("torchao", "torchao"),
    ]
    proc = run_cli("rigs")
    assert proc.returncode == 0 and "h100" in proc.stdout and "price_per_hour" in proc.stdout


def test_a_backend_without_its_library_says_so(monkeypatch, tiny_model, tmp_path):
    from quantlab.errors import BackendUnavailableError
    from quantlab.methods import base as methods_base
    from quantlab.methods import get_backend

    monkeypatch.setattr(methods_base, "is_installed", lambda dist: dist != "llmcompressor")
    availability = get_backend("rtn").availability()
    assert not availability.usable
    assert availability.reason == "llmcompressor not installed (pip install 'quantlab[llmcompressor]')"
    with pytest.raises(BackendUnavailableError, match="rtn/llmcompressor cannot run here"):
        quantize(str(tiny_model), MethodSpec(method="rtn"), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_help_everywhere():
    """Every command's help, as `--help | grep` sees it (piped, 80 columns): nothing cut short with …, and every
    option named whole (a hidden `--no-X` in the text of its `--X`)."""
    from typer.main import get_command

    from quantlab.cli import app

    commands = get_command(app).commands
    assert {"quantize", "bench", "report", "methods", "rigs", "demo", "serve", "fit", "recommend", "run"} <= set(
        commands
    )
    for name, command in [("", None), *commands.items()]:
        proc = run_cli(*([name] if name else []), "--help", env={"COLUMNS": "80"})
        assert proc.returncode == 0 and "Usage" in proc.stdout, name
        assert "…" not in proc.stdout, (name, [line for line in proc.stdout.splitlines() if "…" in line])
        assert max(len(line) for line in proc.stdout.splitlines()) <= 80, name
        text = " ".join(proc.stdout.split())
        options = [o for p in (command.params if command else []) for o in [*p.opts, *p.secondary_opts]]
        assert [o for o in options if o.startswith("--") and o not in text] == [], name


def _state_dict(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))
