"""The perplexity/KLD arithmetic on sessions whose answers are known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from quantlab.bench.quality import log_probs, score, windows
from quantlab.errors import BenchError
from quantlab.results import RuntimeDescription
from quantlab.runtimes.base import GenTiming, Session


class FixedSession(Session):
    """Logits that are a fixed function of the token at each position."""

    def __init__(self, table: torch.Tensor) -> None:
        self.table = table

    def logits(self, ids):
        return self.table[torch.as_tensor(np.asarray(ids))].float()

    def timed_generate(self, prompts, new_tokens):
        return GenTiming(len(prompts), prompts.shape[1], new_tokens, 1.0, 1.0)

    def describe(self):
        return RuntimeDescription(
            runtime="fake",
            runtime_version="0",
            device="cpu",
            device_name="cpu",
            threads=1,
            compute_dtype="fp32",
            kernel="dense",
            kernel_detail="",
        )


def test_windows_drop_the_short_tail():
    ids = np.arange(10)
    parts = windows(ids, 4)
    assert [list(p) for p in parts] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    with pytest.raises(BenchError):
        windows(np.arange(3), 4)


def test_uniform_logits_give_vocab_size_ppl():
    vocab = 256
    session = FixedSession(torch.zeros(vocab, vocab))
    metrics = score(session, np.arange(100) % vocab, 10)
    assert metrics.ppl == pytest.approx(vocab, rel=1e-6)
    assert metrics.tokens_scored == 10 * 9 and metrics.n_windows == 10


def test_known_nll_and_divergence():
    vocab = 4
    torch.manual_seed(0)
    base_table = torch.randn(vocab, vocab)
    other_table = base_table + 0.5 * torch.randn(vocab, vocab)
    ids = np.array([0, 1, 2, 3, 0, 2, 1, 3])
    metrics = score(FixedSession(other_table), ids, 4, baseline=FixedSession(base_table), baseline_digest="b")
    # by hand
    nll, base_nll, kls, agree = [], [], [], []
    for w in (ids[:4], ids[4:]):
        for pos in range(3):
            q = torch.log_softmax(other_table[w[pos]], -1)
            p = torch.log_softmax(base_table[w[pos]], -1)
            nll.append(-q[w[pos + 1]].item())
            base_nll.append(-p[w[pos + 1]].item())
            kls.append((p.exp() * (p - q)).sum().item())
            agree.append(int(p.argmax() == q.argmax()))
    assert metrics.ppl == pytest.approx(math.exp(np.mean(nll)), rel=1e-5)
    vs = metrics.vs_baseline
    assert vs.baseline_ppl == pytest.approx(math.exp(np.mean(base_nll)), rel=1e-5)
    assert vs.kld_mean == pytest.approx(np.mean(kls), rel=1e-4)
    assert vs.top1_agreement == pytest.approx(np.mean(agree))
    assert vs.delta_ppl_pct == pytest.approx((metrics.ppl / vs.baseline_ppl - 1) * 100)


def test_identical_models_have_zero_divergence():
    table = torch.randn(16, 16)
    metrics = score(FixedSession(table), np.arange(64) % 16, 8, baseline=FixedSession(table))
    assert abs(metrics.vs_baseline.kld_mean) < 1e-6
    assert metrics.vs_baseline.top1_agreement == 1.0


def _llama_percentile(values: list[float], fraction: float) -> float:
    """llama-perplexity's percentile, written from its definition: linear between the sorted values."""
    values = sorted(values)
    p = fraction * (len(values) - 1)
    i = int(p)
    return (1 - (p - i)) * values[i] + (p - i) * values[min(i + 1, len(values) - 1)]


def test_divergence_detail_follows_llama_perplexity():
    """The KLD and Δp distributions, Δp mean/RMS and standard errors, computed by hand as llama-perplexity does
    (its percentile interpolation; the median of an even count is the mean of the middle two)."""
    vocab, ctx = 8, 10
    torch.manual_seed(1)
    base_table = torch.randn(vocab, vocab)
    other_table = base_table + 0.7 * torch.randn(vocab, vocab)
    ids = np.random.default_rng(0).integers(0, vocab, 40)
    vs = score(FixedSession(other_table), ids, ctx, baseline=FixedSession(base_table)).vs_baseline
    kls, dps, nll, base_nll = [], [], [], []
    for w in windows(ids, ctx):
        for pos in range(ctx - 1):
            q = torch.log_softmax(other_table[w[pos]].double(), -1)
            p = torch.log_softmax(base_table[w[pos]].double(), -1)
            kls.append((p.exp() * (p - q)).sum().item())
            dps.append(q[w[pos + 1]].exp().item() - p[w[pos + 1]].exp().item())
            nll.append(-q[w[pos + 1]].item())
            base_nll.append(-p[w[pos + 1]].item())
    detail = vs.detail
    assert len(kls) == 36  # an even count: the median is the mean of the middle two
    ordered = sorted(kls)
    assert vs.kld_median == detail.kld.median == pytest.approx((ordered[17] + ordered[18]) / 2, rel=1e-4)
    for field, fraction in [("p0_1", 0.001), ("p1", 0.01), ("p5", 0.05), ("p10", 0.1), ("p90", 0.9)]:
        assert getattr(detail.kld, field) == pytest.approx(_llama_percentile(kls, fraction), rel=1e-4, abs=1e-7)
    assert (detail.kld.min, detail.kld.max) == (pytest.approx(min(kls), abs=1e-6), pytest.approx(max(kls)))
    assert detail.kld.p99_9 == pytest.approx(_llama_percentile(kls, 0.999), rel=1e-4)
    for field, fraction in [("p25", 0.25), ("p75", 0.75), ("p95", 0.95), ("p99", 0.99)]:
        assert getattr(detail.delta_p, field) == pytest.approx(_llama_percentile(dps, fraction), abs=1e-6)
    assert detail.delta_p_mean == pytest.approx(np.mean(dps), abs=1e-7)
    assert detail.delta_p_rms == pytest.approx(math.sqrt(np.mean(np.square(dps))), rel=1e-5)
    n = len(kls)
    assert detail.kld_mean_stderr == pytest.approx(math.sqrt((np.mean(np.square(kls)) - np.mean(kls) ** 2) / (n - 1)))
    assert detail.delta_p_mean_stderr == pytest.approx(
        math.sqrt((np.mean(np.square(dps)) - np.mean(dps) ** 2) / (n - 1))
    )
    assert detail.nll_correlation == pytest.approx(np.corrcoef(nll, base_nll)[0, 1], rel=1e-5)
    assert -1 < detail.delta_p.min < 0 < detail.delta_p.max < 1


def test_identical_models_have_no_delta_p():
    table = torch.randn(16, 16)
    detail = score(FixedSession(table), np.arange(64) % 16, 8, baseline=FixedSession(table)).vs_baseline.detail
    assert detail.delta_p.min == detail.delta_p.max == detail.delta_p_rms == 0
    assert detail.kld.max < 1e-6 and detail.nll_correlation == pytest.approx(1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_log_probs_in_place_are_the_same_numbers(dtype):
    """Handed over, float32 logits become their log-probabilities in place (one window of rows alive, not two);
    the numbers are the ones a fresh tensor gets, and other inputs are left as they were."""
    logits = (torch.randn(130, 1000) * 4).to(dtype)
    original = logits.clone()
    with torch.inference_mode():  # as a runtime's forward returns them
        handed = logits.clone()
    fresh = log_probs(logits)
    over = log_probs(handed, overwrite=True)
    assert torch.equal(fresh, over) and over.dtype == torch.float32
    assert (over.data_ptr() == handed.data_ptr()) == (dtype == torch.float32)
    assert torch.equal(logits, original)  # not handed over: left as it was
