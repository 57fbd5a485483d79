"""Integration tests on the real embedded default model (SmolLM2-135M-Instruct): real properties, real numbers.

Minutes on 2 CPU cores; marked slow, run in CI.
"""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from quantlab.bench import BenchConfig, bench
from quantlab.quantizer import quantize
from quantlab.spec import MethodSpec
from tests.conftest import SHARED_WIKITEXT, run_cli

pytestmark = pytest.mark.slow

EVAL_TOKENS = 4096
CTX = 512


@pytest.fixture(scope="module")
def wiki_test_path() -> str:
    """The issue's file: the shared WikiText-2 test split where mounted, else the identical embedded copy."""
    shared = SHARED_WIKITEXT / "wiki.test.tokens"
    return str(shared) if shared.is_file() else "embedded"


@pytest.fixture(scope="module")
def smol(tmp_path_factory, default_model_dir):
    root = tmp_path_factory.mktemp("smol")
    return {
        "fp32": quantize("default", MethodSpec(method="none", dtype="fp32"), root / "fp32"),
        "w8": quantize("default", MethodSpec(method="rtn", bits=8, group_size=64), root / "w8"),
        "w4": quantize("default", MethodSpec(method="rtn", bits=4, group_size=64), root / "w4"),
    }


@pytest.fixture(scope="module")
def quality(smol, wiki_test_path):
    options = BenchConfig(dataset=wiki_test_path, ctx=CTX, max_tokens=EVAL_TOKENS, speed=False)
    records = bench([smol[k].path for k in ("fp32", "w8", "w4")], baseline=smol["fp32"].path, config=options)
    return dict(zip(("fp32", "w8", "w4"), records, strict=True))


def test_baseline_ppl_matches_a_plain_transformers_loop(quality, default_model_dir, wiki_test_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from quantlab.corpus import load_text

    text = load_text(wiki_test_path, "test")[0]
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids[0][:EVAL_TOKENS]
    model = AutoModelForCausalLM.from_pretrained(default_model_dir, dtype=torch.float32).eval()
    losses = []
    with torch.no_grad():
        for start in range(0, EVAL_TOKENS - CTX + 1, CTX):
            window = ids[start : start + CTX][None]
            losses.append(model(window, labels=window).loss.item())  # mean NLL of tokens 1..CTX-1
    reference = math.exp(sum(losses) / len(losses))
    measured = quality["fp32"].quality
    assert measured.tokens_scored == (EVAL_TOKENS // CTX) * (CTX - 1)
    assert measured.ppl == pytest.approx(reference, rel=1e-3)
    assert 10 < measured.ppl < 60, "a trained 135M model on WikiText-2 (a random one scores ≈ 49152)"


def test_rtn_quality_ordering(quality):
    fp32, w8, w4 = (quality[k].quality for k in ("fp32", "w8", "w4"))
    assert w4.ppl > w8.ppl >= fp32.ppl * (1 - 0.005)
    assert w4.vs_baseline.kld_mean > w8.vs_baseline.kld_mean > 0
    assert w4.vs_baseline.top1_agreement < w8.vs_baseline.top1_agreement <= 1
    assert abs(fp32.vs_baseline.kld_mean) < 1e-6 and fp32.vs_baseline.top1_agreement == 1


def test_sizes_follow_bits(smol):
    sizes = {k: a.manifest.weight_bytes for k, a in smol.items()}
    assert sizes["w4"] < sizes["w8"] < sizes["fp32"]


@pytest.mark.parametrize("name", ["fp32", "w8", "w4"])
def test_artifacts_reload_unmodified_in_a_fresh_process(smol, name):
    code = (
        "import sys, torch; from transformers import AutoModelForCausalLM, AutoTokenizer; "
        "p = sys.argv[1]; m = AutoModelForCausalLM.from_pretrained(p); t = AutoTokenizer.from_pretrained(p); "
        "ids = t('The capital of France is', return_tensors='pt').input_ids; "
        "out = m.generate(ids, max_new_tokens=5, do_sample=False); "
        "assert out.shape[1] == ids.shape[1] + 5; print(t.decode(out[0]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(smol[name].path)], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_demo_command(tmp_path, default_model_dir):
    results, report = tmp_path / "demo.jsonl", tmp_path / "demo.md"
    proc = run_cli(
        "demo",
        "--work-dir",
        str(tmp_path / "arts"),
        "--results",
        str(results),
        "--report",
        str(report),
        "--max-tokens",
        "1024",
        "--batch-sizes",
        "1",
        "--repeats",
        "1",
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for label in (
        "| none (transformers) | fp32",
        "| none (transformers) | bf16",
        "| rtn (llmcompressor) | w8 g64 sym",
        "| rtn (llmcompressor) | w4 g64 sym",
        "| gguf (llamacpp)     | Q4_K_M",
        "| fp8 (llmcompressor) | FP8_DYNAMIC",
        "| bnb (bitsandbytes)  | nf4",
    ):
        assert label in proc.stdout
        assert label in report.read_text()
    assert len(results.read_text().splitlines()) == 7
    assert "transformers/emulated" in report.read_text()  # FP8 W8A8 on a CPU
    from quantlab.results import read_results

    for record in read_results(results):  # every runtime, dense or low-bit, below its bandwidth limit
        assert record.roofline is not None and 0 < record.roofline.pct_of_limit <= 100, record.artifact.label
    assert "% of BW limit" in report.read_text()
    assert "embedded" in report.read_text() or "WikiText-2" in report.read_text()
