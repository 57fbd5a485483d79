"""Perplexity and divergence from the baseline, on one fixed token stream.

Protocol (stated in every result): the stream is cut into non-overlapping windows of `ctx` tokens (a short
last window is dropped); in each window every token but the first is scored given the tokens before it;
ppl = exp(mean NLL over all scored tokens). Against a baseline, on the same windows: KL(baseline ‖ model)
per scored position and whether both put their top-1 on the same token — the definitions of llama.cpp's
`perplexity --kl-divergence`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Union

import numpy as np

from quantlab.errors import BenchError
from quantlab.results.metrics import BaselineComparison, DivergenceDetail, QualityMetrics, Quantiles
from quantlab.runtimes.base import Session
from quantlab.util.memory import release_freed_memory

if TYPE_CHECKING:
    import torch

    from quantlab.reference import Reference


KL_ROWS = 64  # rows per step of the float64 log-softmax and of the KL sum: temporaries of a few tens of MB
Baseline = Union[Session, "Reference"]  # a loaded baseline (tests, cross-checks) or its reference file (bench)


def log_probs(logits, *, overwrite: bool = False) -> torch.Tensor:
    """A window's log-probabilities for every position but the last (the ones that predict a scored token): the
    one computation both a cell and its baseline go through, so a reference holds exactly what scoring uses.

    Computed in float64 a few rows at a time and rounded once to float32. torch's float32 log_softmax over a
    49k-entry row puts the log-sum-exp 6–8e-6 nats low (results/kld-vs-llama-perplexity.md): that lowers every
    KLD by as much, 2e-3 of a Q8_0's and more of a near-lossless format's, against any baseline computed otherwise
    (llama-perplexity's rows, or a cell's own error where it differs from the baseline's).

    `overwrite`: the caller hands over `logits` (a runtime's fresh output) and float32 CPU rows are replaced by
    their log-probabilities in place, so a window's logits and log-probabilities are never both alive."""
    import torch

    with torch.inference_mode():  # a runtime's logits are often inference tensors, writable only in this mode
        rows = logits[:-1].cpu()
        fits = overwrite and rows.dtype == torch.float32 and rows.is_contiguous()
        out = rows if fits else torch.empty(rows.shape, dtype=torch.float32)
        for start in range(0, rows.shape[0], KL_ROWS):
            out[start : start + KL_ROWS] = torch.log_softmax(rows[start : start + KL_ROWS].double(), dim=-1)
    return out


def baseline_blocks(baseline: Baseline, index: int, window: np.ndarray) -> Iterator[torch.Tensor]:
    """The baseline's log-probabilities for window `index`, KL_ROWS rows at a time: streamed from its reference
    (one block in memory, the window's checksum verified after its last block), or computed whole."""
    import torch

    from quantlab.reference import Reference

    if isinstance(baseline, Reference):
        return (torch.from_numpy(block) for block in baseline.logprob_blocks(index, KL_ROWS))
    return iter(log_probs(baseline.logits(window), overwrite=True).split(KL_ROWS))


def compare_window(
    base_blocks: Iterable[torch.Tensor], logp: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per scored position of one window, block by block: KL(baseline ‖ model), the baseline's NLL of the right
    token, and how many positions both put their top-1 on. Each row's figures are the same whatever the rows
    around it, so they do not depend on the block size; the sum's temporaries (exp, difference, product) take
    tens of MB instead of three more blocks of a window's size (1 GB each at ctx 2048 of a 128k vocabulary)."""
    import torch

    klds, nlls, agree = [], [], 0
    for b, q, t in zip(base_blocks, logp.split(KL_ROWS), targets.split(KL_ROWS), strict=True):
        klds.append((b.exp() * (b - q)).sum(-1))
        nlls.append(-b.gather(1, t)[:, 0])
        agree += int((b.argmax(-1) == q.argmax(-1)).sum().item())
        del b
        # the block and its temporaries (tens of MB each) come from glibc's heap, which kept them: measured on a
        # 128k vocabulary, a window's worth (0.26 GB) until the window ended
        release_freed_memory()
    return torch.cat(klds), torch.cat(nlls), agree


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
    baseline: Baseline | None = None,
    baseline_digest: str = "",
    baseline_label: str = "",
    on_window: Callable[[], None] | None = None,
) -> QualityMetrics:
    import torch

    nlls: list[torch.Tensor] = []  # per scored position, in stream order
    base_nlls: list[torch.Tensor] = []
    klds: list[torch.Tensor] = []
    agree = 0
    parts = windows(ids, ctx)
    for index, window in enumerate(parts):
        targets = torch.as_tensor(np.asarray(window[1:], dtype=np.int64))[:, None]
        logp = log_probs(session.logits(window), overwrite=True)
        nlls.append(-logp.gather(1, targets)[:, 0])
        if baseline is not None:
            kld, base_nll, same = compare_window(baseline_blocks(baseline, index, window), logp, targets)
            klds.append(kld)
            base_nlls.append(base_nll)
            agree += same
        del logp  # before the next window's logits: one window of rows alive at the peak, not two
        release_freed_memory()
        if on_window:
            on_window()
    nll = torch.cat(nlls).double()
    scored = nll.numel()
    metrics = QualityMetrics(
        ppl=math.exp(nll.mean().item()),
        nll_mean=nll.mean().item(),
        tokens_scored=scored,
        n_windows=len(parts),
        ctx=ctx,
        stride=ctx,
    )
    if baseline is not None:
        kld, base_nll = torch.cat(klds).double(), torch.cat(base_nlls).double()
        base_ppl = math.exp(base_nll.mean().item())
        detail = divergence_detail(kld.numpy(), nll.numpy(), base_nll.numpy())
        metrics.vs_baseline = BaselineComparison(
            baseline_digest=baseline_digest,
            baseline_label=baseline_label,
            baseline_ppl=base_ppl,
            ppl_ratio=metrics.ppl / base_ppl,
            delta_ppl_pct=(metrics.ppl / base_ppl - 1) * 100,
            kld_mean=kld.mean().item(),
            kld_median=detail.kld.median,
            kld_p99=detail.kld.p99,
            top1_agreement=agree / scored,
            detail=detail,
        )
    return metrics


def quantiles(values: np.ndarray) -> Quantiles:
    """`values` at llama-perplexity's points; numpy's default (linear) interpolation is llama.cpp's."""
    points = np.percentile(values, [0, 0.1, 1, 5, 10, 25, 50, 75, 90, 95, 99, 99.9, 100])
    return Quantiles(**dict(zip(Quantiles.model_fields, (float(v) for v in points), strict=True)))


def _mean_stderr(values: np.ndarray) -> float:
    # llama.cpp's mean_and_uncertainty: the population variance over n − 1
    n = values.size
    return math.sqrt(max(float((values**2).mean() - values.mean() ** 2), 0.0) / (n - 1)) if n > 1 else 0.0


def divergence_detail(kld: np.ndarray, nll: np.ndarray, base_nll: np.ndarray) -> DivergenceDetail:
    """llama-perplexity's statistics from per-position KLD and the two models' NLLs of the right token."""
    delta_p = np.exp(-nll) - np.exp(-base_nll)
    spread = nll.std() * base_nll.std()
    correlation = float(((nll - nll.mean()) * (base_nll - base_nll.mean())).mean() / spread) if spread else 1.0
    return DivergenceDetail(
        kld=quantiles(kld),
        kld_mean_stderr=_mean_stderr(kld),
        delta_p=quantiles(delta_p),
        delta_p_mean=float(delta_p.mean()),
        delta_p_mean_stderr=_mean_stderr(delta_p),
        delta_p_rms=float(np.sqrt((delta_p**2).mean())),
        nll_correlation=correlation,
    )
