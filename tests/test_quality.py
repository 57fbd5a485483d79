"""The perplexity/KLD arithmetic on sessions whose answers are known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from quantlab.bench.quality import score, windows
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
