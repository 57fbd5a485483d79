"""GPTQ and AWQ on the real default model beat round-to-nearest, for the default and the GPTQModel backends.

CI settings are reduced (16 × 256 calibration tokens, 4096 evaluation tokens) to fit its time budget; the
issue's full settings (64 × 512, 16384 tokens) are run by `benchmarks/calibrated_quality.py` and committed
under results/.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from quantlab.bench import BenchConfig, bench
from quantlab.quantizer import quantize
from quantlab.spec import Calibration, MethodSpec

pytestmark = pytest.mark.slow

CALIB = Calibration(n_samples=16, seq_len=256)
CALIBRATED = [("gptq", "llmcompressor"), ("gptq", "gptqmodel"), ("awq", "llmcompressor"), ("awq", "gptqmodel")]


@pytest.fixture(scope="module")
def smol(tmp_path_factory, default_model_dir):
    root = tmp_path_factory.mktemp("smol-calibrated")
    specs = {
        "fp32": MethodSpec(method="none", dtype="fp32"),
        "rtn-sym": MethodSpec(method="rtn", bits=4, group_size=64, symmetric=True),
        "rtn-asym": MethodSpec(method="rtn", bits=4, group_size=64, symmetric=False),
    }
    specs |= {
        f"{m}-{b}": MethodSpec(method=m, backend=b, bits=4, group_size=64, calibration=CALIB) for m, b in CALIBRATED
    }
    return {name: quantize("default", spec, root / name) for name, spec in specs.items()}


@pytest.fixture(scope="module")
def quality(smol):
    names = list(smol)
    records = bench(
        [smol[n].path for n in names],
        baseline=smol["fp32"].path,
        config=BenchConfig(dataset="embedded", ctx=512, max_tokens=4096, speed=False),
    )
    return {name: record.quality for name, record in zip(names, records, strict=True)}


@pytest.mark.parametrize(("method", "backend"), CALIBRATED, ids=lambda x: x)
def test_calibrated_beats_rtn(quality, smol, method, backend):
    mine = quality[f"{method}-{backend}"]
    same_grid = "rtn-sym" if smol[f"{method}-{backend}"].manifest.spec.symmetric else "rtn-asym"
    for rtn in {same_grid, "rtn-sym"}:  # like for like, and the default RTN the issue names
        assert mine.ppl < quality[rtn].ppl, (rtn, mine.ppl, quality[rtn].ppl)
        assert mine.vs_baseline.kld_mean < quality[rtn].vs_baseline.kld_mean


@pytest.mark.parametrize("name", [f"{m}-{b}" for m, b in CALIBRATED])
def test_reloads_in_a_fresh_process(smol, name):
    code = (
        "import sys, torch; from transformers import AutoModelForCausalLM; "
        "m = AutoModelForCausalLM.from_pretrained(sys.argv[1]); "
        "out = m(torch.arange(1, 33)[None]).logits; assert torch.isfinite(out).all(); print(type(m))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(smol[name].path)], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
