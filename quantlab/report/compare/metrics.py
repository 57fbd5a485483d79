"""Every figure a record holds that two runs can be set side by side on, named, each with its spread (`spread`).

The names carry the unit and the point (batch size, concurrency) a figure was read at, so two records line up by
name; a figure one record holds and the other does not shows up as absent on one side rather than being dropped.
The in-process TTFT and TPOT are left out: they are the same timings as prefill and decode tok/s, inverted.
"""

from __future__ import annotations

import math

from quantlab.report.compare.spread import Measure
from quantlab.results import Result, Spread

MB = 1e6


def measures(r: Result) -> dict[str, Measure]:
    """The record's figures in the order a reader scans them: the file, memory, speed, price, quality, served."""
    found = {}
    if r.artifact is not None:  # an external server's record has no artifact, so no file to measure
        found |= {  # in bytes: a rebuilt artifact often differs from the first by a few bytes of metadata only
            "weights, bytes": Measure(r.artifact.weight_bytes, "exact"),
            "size on disk, bytes": Measure(r.artifact.disk_bytes, "exact"),
            "quantize s": Measure(r.artifact.quantize_seconds, "none"),
        }
    if r.memory is not None:
        found["peak memory MB"] = Measure(r.memory.peak_bytes / MB, "none")
    found |= _speed(r) | _quality(r) | _tasks(r) | _served(r)
    return found


def _repeats(spread: Spread, scale: float = 1.0) -> Measure:
    return Measure(spread.median * scale, "repeats", low=spread.min * scale, high=spread.max * scale, n=spread.n)


def _speed(r: Result) -> dict[str, Measure]:
    found: dict[str, Measure] = {}
    for p in sorted(r.speed, key=lambda p: p.batch_size):
        found[f"prefill tok/s, batch {p.batch_size}"] = _repeats(p.prefill_tok_s)
        found[f"decode tok/s, batch {p.batch_size}"] = _repeats(p.decode_tok_s)
    if r.roofline is not None:
        found["decode % of bandwidth limit, batch 1"] = Measure(r.roofline.pct_of_limit, "none")
    for c in r.cost:
        if c.basis == "decode":
            found[f"$/1M tokens, batch {c.batch_size}"] = _price(c.usd_per_1m_tokens, r, c.batch_size)
    return found


def _price(usd: float, r: Result, batch: int) -> Measure:
    """$/1M = price per hour ÷ decode tok/s, so the decode repeats bound it: the fastest repeat gives the lowest
    price. Without the speed point it was priced from, the price has no spread."""
    point = next((p for p in r.speed if p.batch_size == batch), None)
    d = point.decode_tok_s if point else None
    if d is None or d.min <= 0 or d.median <= 0:
        return Measure(usd, "none")
    return Measure(usd, "repeats", low=usd * d.median / d.max, high=usd * d.median / d.min, n=d.n)


def _quality(r: Result) -> dict[str, Measure]:
    q = r.quality
    if q is None:
        return {}
    found = {"ppl": Measure(q.ppl, "none")}
    vs = q.vs_baseline
    if vs is None:
        return found
    d = vs.detail
    found["quality % of baseline"] = Measure(q.recovery_pct(), "none")
    found["KLD mean"] = Measure(vs.kld_mean, "stderr", se=d.kld_mean_stderr if d else None)
    found["KLD 99 %"] = Measure(vs.kld_p99, "none")
    found["top-1 agreement %"] = Measure(100 * vs.top1_agreement, "stderr", se=_share_se(vs.top1_agreement, q))
    if d is not None:
        found["Δp mean %"] = Measure(100 * d.delta_p_mean, "stderr", se=100 * d.delta_p_mean_stderr)
    return found


def _share_se(p: float, q) -> float | None:
    """llama-perplexity's standard error of its "same top p": a share of the scored positions, as a binomial."""
    n = q.tokens_scored
    if n < 2 or not 0 <= p <= 1:
        return None
    return 100 * math.sqrt(p * (1 - p) / (n - 1))


def _tasks(r: Result) -> dict[str, Measure]:
    if r.tasks is None:
        return {}
    return {f"task {s.task} {s.metric}": Measure(s.value, "stderr", se=s.stderr) for s in r.tasks.scores}


def _served(r: Result) -> dict[str, Measure]:
    if r.load is None:
        return {}
    found = {} if r.load.startup_s is None else {"served: startup s": Measure(r.load.startup_s, "none")}
    prices = {c.batch_size: c.usd_per_1m_tokens for c in r.cost if c.basis == "served"}
    for lv in sorted(r.load.levels, key=lambda lv: lv.concurrency):
        at = f"served c={lv.concurrency}:"
        found[f"{at} output tok/s"] = Measure(lv.output_tok_s, "none")
        found[f"{at} req/s"] = Measure(lv.requests_per_s, "none")
        for name, dist in (("TTFT", lv.ttft_ms), ("TPOT", lv.tpot_ms), ("ITL", lv.itl_ms), ("E2E", lv.e2e_ms)):
            if dist is not None:
                found[f"{at} {name} ms p50"] = Measure(
                    dist.median, "requests", low=dist.median, high=dist.p90, n=dist.n
                )
        if lv.goodput_rps is not None:
            found[f"{at} goodput req/s"] = Measure(lv.goodput_rps, "none")
        if lv.concurrency in prices:
            found[f"{at} $/1M output tokens"] = Measure(prices[lv.concurrency], "none")
    return found
