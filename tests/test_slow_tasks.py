"""Task accuracy on the real default model: the shipped next-word task (LAMBADA's protocol on WikiText-2 test)
tells formats apart the way KLD does, and a near-lossless copy recovers ~100 %."""

from __future__ import annotations

import pytest

from quantlab.bench import BenchConfig, bench
from quantlab.bench.tasks import BUILTIN_TASK
from quantlab.spec import MethodSpec

pytestmark = pytest.mark.slow
TASK_LIMIT = 200  # of the task's 400 documents: lm-eval on 4 models was 70 % of this module's time


@pytest.fixture(scope="module")
def recovery(smol):
    specs = {
        "fp32": MethodSpec(method="none", dtype="fp32"),
        "bf16": MethodSpec(method="none", dtype="bf16"),
        "fp8": MethodSpec(method="fp8", scheme="FP8_W8A16"),
        "rtn-w4": MethodSpec(method="rtn", bits=4, group_size=64),
    }
    made = smol.artifacts(specs)
    names = [n for n in made if n != "fp32"]
    results = bench(
        [made[n].path for n in names],
        baseline=made["fp32"].path,
        config=BenchConfig(
            dataset="embedded", ctx=512, max_tokens=512, speed=False, tasks=[BUILTIN_TASK], task_limit=TASK_LIMIT
        ),
    )
    return {name: {s.metric: s for s in r.tasks.scores} for name, r in zip(names, results, strict=True)}


def test_a_near_lossless_copy_recovers_everything(recovery):
    bf16 = recovery["bf16"]
    assert bf16["perplexity"].recovery_pct == pytest.approx(100, abs=2)
    assert bf16["acc"].recovery_pct == pytest.approx(100, abs=5)
    assert bf16["acc"].baseline > 0.10  # a trained model, far above guessing one word out of tens of thousands


def test_word_perplexity_recovery_orders_formats_like_kld(recovery):
    # KLD on this model: FP8 W8A16 0.017 < RTN w4 0.406 (results/fp-formats-smollm2.md)
    fp8, rtn = recovery["fp8"]["perplexity"], recovery["rtn-w4"]["perplexity"]
    assert rtn.recovery_pct < fp8.recovery_pct < 100.5
    assert rtn.recovery_pct < 90
