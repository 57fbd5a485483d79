"""Prefill and decode throughput per batch size: warm-up runs, then repeats, reported as median [min, max]."""

from __future__ import annotations

import numpy as np

from quantlab.results.metrics import SpeedPoint, Spread
from quantlab.runtimes.base import GenTiming, Session


def prompts_from(ids: np.ndarray, batch_size: int, prompt_tokens: int) -> np.ndarray:
    """Distinct consecutive slices of the stream as prompts (wrapping if the stream is short)."""
    needed = batch_size * prompt_tokens
    flat = np.resize(np.asarray(ids, dtype=np.int64), needed) if len(ids) < needed else ids[:needed]
    return flat.reshape(batch_size, prompt_tokens)


def summarize(timings: list[GenTiming]) -> SpeedPoint:
    first = timings[0]
    steps = first.new_tokens - 1
    return SpeedPoint(
        batch_size=first.batch_size,
        prompt_tokens=first.prompt_tokens,
        new_tokens=first.new_tokens,
        prefill_tok_s=Spread.of([t.batch_size * t.prompt_tokens / t.prefill_s for t in timings]),
        decode_tok_s=Spread.of([t.batch_size * steps / t.decode_s for t in timings]),
        ttft_ms=Spread.of([t.prefill_s * 1e3 for t in timings]),
        tpot_ms=Spread.of([t.decode_s / steps * 1e3 for t in timings]),
    )


def measure(
    session: Session,
    ids: np.ndarray,
    *,
    batch_sizes: list[int],
    prompt_tokens: int,
    new_tokens: int,
    warmup: int,
    repeats: int,
) -> list[SpeedPoint]:
    points = []
    for batch_size in batch_sizes:
        prompts = prompts_from(ids, batch_size, prompt_tokens)
        for _ in range(warmup):
            session.timed_generate(prompts, new_tokens)
        points.append(summarize([session.timed_generate(prompts, new_tokens) for _ in range(repeats)]))
    return points
