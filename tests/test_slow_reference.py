"""On the real default model: the bench's quality numbers, now read against the baseline's reference file, equal
the in-memory comparison (the baseline loaded beside the cell, as the bench did before references) for bf16,
RTN w4 and GGUF Q4_K_M: ppl and top-1 agreement identical, KLD mean/median/p99 within 1e-4 relative."""

from __future__ import annotations

import pytest

from quantlab.spec import MethodSpec
from tests.conftest import CI_QUALITY

pytestmark = pytest.mark.slow

SPECS = {
    "bf16": MethodSpec(method="none", dtype="bf16"),
    "rtn-w4": MethodSpec(method="rtn", bits=4, group_size=64),
    "Q4_K_M": MethodSpec(method="gguf", scheme="Q4_K_M"),
}


def test_reference_metrics_equal_the_in_memory_comparison(smol):
    from quantlab.bench import BenchConfig
    from quantlab.bench.prepare import prepare
    from quantlab.bench.quality import score

    from_reference = smol.quality(SPECS)
    made = smol.artifacts(SPECS)
    config = BenchConfig(**CI_QUALITY)
    plan = prepare([a.path for a in made.values()], smol.artifact(smol.baseline).path, config)
    base = plan.baseline
    base_session = base.runtime.load_as(base.artifact, base.quality)
    try:
        for name, subject in zip(made, plan.subjects, strict=True):
            session = subject.runtime.load_as(subject.artifact, subject.quality)
            try:
                in_memory = score(session, subject.stream.ids, config.ctx, baseline=base_session)
            finally:
                session.close()
            ours, theirs = from_reference[name].quality, in_memory
            assert ours.ppl == theirs.ppl and ours.tokens_scored == theirs.tokens_scored, name
            a, b = ours.vs_baseline, theirs.vs_baseline
            assert a.baseline_ppl == b.baseline_ppl and a.top1_agreement == b.top1_agreement, name
            for field in ("kld_mean", "kld_median", "kld_p99"):
                assert getattr(a, field) == pytest.approx(getattr(b, field), rel=1e-4, abs=0), (name, field)
    finally:
        base_session.close()
