"""Integration tests on the real embedded default model (SmolLM2-135M-Instruct): real properties, real numbers.

Minutes on 2 CPU cores; marked slow, run in CI. Artifacts and their quality come from the session cache
(conftest.SmolCache): the first 2048 tokens of the embedded WikiText-2 test split, ctx 512 (the same text and
tokens as the shared wiki.test.tokens, which tests/test_corpus.py checks).
"""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from quantlab.spec import MethodSpec
from tests.conftest import CI_QUALITY, REPO
from tests.test_bench_config import run_with_default

pytestmark = pytest.mark.slow

SPECS = {
    "fp32": MethodSpec(method="none", dtype="fp32"),
    "w8": MethodSpec(method="rtn", bits=8, group_size=64),
    "w4": MethodSpec(method="rtn", bits=4, group_size=64),
}


@pytest.fixture(scope="module")
def quality(smol):
    return smol.quality(SPECS)


def test_baseline_ppl_matches_a_plain_transformers_loop(quality, default_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from quantlab.corpus import load_text

    tokens, ctx = CI_QUALITY["max_tokens"], CI_QUALITY["ctx"]
    text = load_text(CI_QUALITY["dataset"], "test")[0]
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids[0][:tokens]
    model = AutoModelForCausalLM.from_pretrained(default_model_dir, dtype=torch.float32).eval()
    losses = []
    with torch.no_grad():
        for start in range(0, tokens - ctx + 1, ctx):
            window = ids[start : start + ctx][None]
            losses.append(model(window, labels=window).loss.item())  # mean NLL of tokens 1..ctx-1
    reference = math.exp(sum(losses) / len(losses))
    measured = quality["fp32"].quality
    assert measured.tokens_scored == (tokens // ctx) * (ctx - 1)
    assert measured.ppl == pytest.approx(reference, rel=1e-3)
    assert 10 < measured.ppl < 60, "a trained 135M model on WikiText-2 (a random one scores ≈ 49152)"


def test_rtn_quality_ordering(quality):
    fp32, w8, w4 = (quality[k].quality for k in ("fp32", "w8", "w4"))
    assert w4.ppl > w8.ppl >= fp32.ppl * (1 - 0.005)
    assert w4.vs_baseline.kld_mean > w8.vs_baseline.kld_mean > 0
    assert w4.vs_baseline.top1_agreement < w8.vs_baseline.top1_agreement <= 1
    assert abs(fp32.vs_baseline.kld_mean) < 1e-6 and fp32.vs_baseline.top1_agreement == 1


def test_sizes_follow_bits(smol):
    sizes = {k: a.manifest.weight_bytes for k, a in smol.artifacts(SPECS).items()}
    assert sizes["w4"] < sizes["w8"] < sizes["fp32"]


def test_artifacts_reload_unmodified_in_a_fresh_process(smol):
    code = (
        "import sys, torch; from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "for p in sys.argv[1:]:\n"
        "    m = AutoModelForCausalLM.from_pretrained(p); t = AutoTokenizer.from_pretrained(p)\n"
        "    ids = t('The capital of France is', return_tensors='pt').input_ids\n"
        "    out = m.generate(ids, max_new_tokens=5, do_sample=False)\n"
        "    assert out.shape[1] == ids.shape[1] + 5, p\n"
        "print('ok', len(sys.argv) - 1)"
    )
    paths = [str(a.path) for a in smol.artifacts(SPECS).values()]
    proc = subprocess.run(
        [sys.executable, "-c", code, *paths], capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0 and f"ok {len(paths)}" in proc.stdout, proc.stderr[-2000:]


def test_demo_command(tmp_path, smol):
    """`quantlab demo` runs recipes/demo.yaml through the runner: its 7 cells in the table it prints and writes,
    one record each, each below its bandwidth limit; a bench default changed once in BenchConfig (prompt_tokens,
    here 64) reaches every record of the demo's run, and a command-line setting overrides the recipe. The results
    file starts as a fresh clone has it (the committed records of another run): the demo's table is its own run's
    only."""
    results = tmp_path / "demo.jsonl"
    committed = (REPO / "results" / "demo.jsonl").read_text()
    results.write_text(committed)
    proc = run_with_default(
        "prompt_tokens", 64,
        "demo", "--work-dir", str(smol.root), "--results", str(results),
        "--max-tokens", "1024", "--batch-sizes", "1", "--repeats", "1", "--new-tokens", "8",
        timeout=1500,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = results.with_suffix(".md").read_text()
    for label in (
        "| none (transformers) | fp32",
        "| none (transformers) | bf16",
        "| rtn (llmcompressor) | w8 g64 sym",
        "| rtn (llmcompressor) | w4 g64 sym",
        "| gguf (llamacpp)     | Q4_K_M",
        "| fp8 (llmcompressor) | FP8_DYNAMIC",
        "| bnb (bitsandbytes)  | nf4",
    ):
        assert label in proc.stdout and label in report
    assert "transformers/emulated" in report  # FP8 W8A8 on a CPU
    assert "USDT" not in proc.stdout + proc.stderr and "profiler" not in proc.stdout + proc.stderr
    from quantlab.results import read_results

    records = read_results(results)[len(committed.splitlines()) :]
    assert len(records) == 7 and {r.cell.recipe for r in records} == {"demo"}
    main_table = report.split("\n\n")[1]
    assert len(main_table.splitlines()) == 2 + 7 and "| host" not in main_table  # header, rule, this run's 7 rows
    for record in records:  # every runtime, dense or low-bit, below its bandwidth limit
        assert record.roofline is not None and 0 < record.roofline.pct_of_limit <= 100, record.artifact.label
        assert (record.settings.prompt_tokens, record.settings.new_tokens, record.settings.n_tokens) == (64, 8, 1024)
    assert "% of BW limit" in report and "WikiText-2" in report
