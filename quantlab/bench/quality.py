"""Perplexity and divergence from the baseline, on one fixed token stream.

Protocol (stated in every result): the stream is cut into non-overlapping windows of `ctx` tokens (a short
last window is dropped); in each window every token but the first is scored given the tokens before it;
ppl = exp(mean NLL over all scored tokens). Against a baseline, on the same windows: KL(baseline ‖ model)
per scored position and whether both put their top-1 on the same token — the definitions of llama.cpp's
`perplexity --kl-divergence`.
"""

from __future__ import annotations

import hashlib
import math
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from quantlab.errors import BenchError
from quantlab.results.metrics import BaselineComparison, QualityMetrics
from quantlab.runtimes.base import Session


class ReusedBaseline(Session):
    """The baseline's logits, computed once per window and kept on local disk for every later artifact.

    A bench of N artifacts otherwise re-runs the baseline N times (half the scoring time). Disk, not memory:
    a window is ctx × vocab float32 (100 MB at ctx 512 for a 49k vocabulary). The values are the same
    float32 logits, so the metrics do not change.
    """

    def __init__(self, inner: Session) -> None:
        self.inner = inner
        self._dir = tempfile.TemporaryDirectory(prefix="quantlab-baseline-")
        self._seen: dict[str, Path] = {}

    def logits(self, ids: np.ndarray):
        import torch

        key = hashlib.sha256(np.asarray(ids, dtype=np.int64).tobytes()).hexdigest()
        path = self._seen.get(key)
        if path is not None:
            return torch.from_numpy(np.load(path, allow_pickle=False))
        out = self.inner.logits(ids).float().cpu().numpy()
        path = Path(self._dir.name) / f"{key}.npy"
        np.save(path, out, allow_pickle=False)
        self._seen[key] = path
        return torch.from_numpy(out)

    def timed_generate(self, prompts: np.ndarray, new_tokens: int):
        return self.inner.timed_generate(prompts, new_tokens)

    def describe(self):
        return self.inner.describe()

    def close(self) -> None:
        self.inner.close()
        self._dir.cleanup()


def windows(ids: np.ndarray, ctx: int) -> list[np.ndarray]:
    if ctx < 2:
        raise BenchError(f"--ctx must be at least 2, not {ctx}")
    count = len(ids) // ctx
    if count == 0:
        raise BenchError(f"the token stream has {len(ids)} tokens, fewer than one window of --ctx {ctx}")
    return [ids[i * ctx : (i + 1) * ctx] for i in range(count)]


def score(
    session: Session,
    ids: np.ndarray,
    ctx: int,
    *,
    baseline: Session | None = None,
    baseline_digest: str = "",
    baseline_label: str = "",
    on_window: Callable[[], None] | None = None,
) -> QualityMetrics:
    import torch

    nll_sum = 0.0
    base_nll_sum = 0.0
    scored = 0
    klds: list[torch.Tensor] = []
    agree = 0
    parts = windows(ids, ctx)
    for window in parts:
        targets = torch.as_tensor(np.asarray(window[1:], dtype=np.int64))
        logp = torch.log_softmax(session.logits(window)[:-1].cpu(), dim=-1)
        nll_sum += -logp.gather(1, targets[:, None]).sum().item()
        scored += len(targets)
        if baseline is not None:
            base_logp = torch.log_softmax(baseline.logits(window)[:-1].cpu(), dim=-1)
            base_nll_sum += -base_logp.gather(1, targets[:, None]).sum().item()
            klds.append((base_logp.exp() * (base_logp - logp)).sum(-1))
            agree += int((base_logp.argmax(-1) == logp.argmax(-1)).sum().item())
        if on_window:
            on_window()
    nll = nll_sum / scored
    metrics = QualityMetrics(
        ppl=math.exp(nll), nll_mean=nll, tokens_scored=scored, n_windows=len(parts), ctx=ctx, stride=ctx
    )
    if baseline is not None:
        kld = torch.cat(klds).double()
        base_ppl = math.exp(base_nll_sum / scored)
        metrics.vs_baseline = BaselineComparison(
            baseline_digest=baseline_digest,
            baseline_label=baseline_label,
            baseline_ppl=base_ppl,
            ppl_ratio=metrics.ppl / base_ppl,
            delta_ppl_pct=(metrics.ppl / base_ppl - 1) * 100,
            kld_mean=kld.mean().item(),
            kld_median=kld.median().item(),
            kld_p99=torch.quantile(kld, 0.99).item(),
            top1_agreement=agree / scored,
        )
    return metrics
