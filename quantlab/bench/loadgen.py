"""The load generator: concurrent streaming completions against an OpenAI-compatible endpoint.

It measures what a serving benchmark (vLLM's `bench serve`) measures, with the same definitions (written into every
load sweep as `results.LATENCY_DEFINITIONS`):
- TTFT: request sent → first streamed token;
- TPOT: (end − first token) / (output tokens − 1), per request;
- ITL: the gap between consecutive streamed chunks, pooled over all requests;
- E2E: request sent → last byte;
- output tok/s = output tokens of completed requests / wall time of the level; total tok/s adds prompt tokens;
  requests/s = completed requests / wall time.
Requests are sent as fast as the concurrency cap allows (a closed loop), or with Poisson arrivals at
`request_rate` per second, still capped. Every level is run to completion; failed requests are counted and
the first few reasons kept, never dropped silently.

With an SLO (`results.slo`), each level also counts the completed requests that met every bound and their rate
(goodput), as vLLM's `bench serve --goodput` does. Where the engine reports its own counters with the last
streamed chunk (llama-server's `timings`: prompt tokens computed and taken from its cache, draft tokens proposed
and accepted), the level sums them; an engine that reports none leaves those fields empty, never zero.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field

import httpx

from quantlab.results.metrics import Dist, EngineCounters, LoadLevel
from quantlab.results.slo import Slo

ERROR_EXAMPLES = 3


@dataclass
class Request:
    prompt: str
    prompt_tokens: int  # as quantlab tokenized it; the server's own count (usage) wins when it reports one


@dataclass
class Outcome:
    ok: bool = False
    error: str = ""
    ttft_s: float = 0.0
    e2e_s: float = 0.0
    chunk_times: list[float] = field(default_factory=list)
    output_tokens: int = 0
    prompt_tokens: int = 0
    counted_by: str = "finish-length"
    timings: dict = field(default_factory=dict)  # the engine's own per-request counters, where it sends them

    @property
    def tpot_ms(self) -> float | None:
        return 1e3 * (self.e2e_s - self.ttft_s) / (self.output_tokens - 1) if self.output_tokens > 1 else None


async def _one(client: httpx.AsyncClient, url: str, body: dict, request: Request, expected: int) -> Outcome:
    out = Outcome(prompt_tokens=request.prompt_tokens)
    start = time.perf_counter()
    usage = finish = None
    try:
        async with client.stream("POST", url, json={**body, "prompt": request.prompt}) as response:
            if response.status_code != 200:
                detail = (await response.aread()).decode(errors="replace")[:200]
                out.error = f"HTTP {response.status_code}: {detail}"
                return out
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    out.error = f"stream error: {str(chunk['error'])[:200]}"
                    return out
                if chunk.get("usage"):
                    usage = chunk["usage"]
                if isinstance(chunk.get("timings"), dict):
                    out.timings = chunk["timings"]
                choices = chunk.get("choices") or []
                if choices and choices[0].get("text"):
                    out.chunk_times.append(time.perf_counter() - start)
                if choices and choices[0].get("finish_reason"):
                    finish = choices[0]["finish_reason"]
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        out.error = f"{type(exc).__name__}: {exc}"[:200]
        return out
    out.e2e_s = time.perf_counter() - start
    if not out.chunk_times:
        out.error = "no token streamed"
        return out
    out.ttft_s = out.chunk_times[0]
    if usage and usage.get("completion_tokens"):
        out.output_tokens, out.counted_by = int(usage["completion_tokens"]), "usage"
        out.prompt_tokens = int(usage.get("prompt_tokens") or out.prompt_tokens)
        if out.output_tokens != expected:
            out.error = f"{out.output_tokens} output tokens instead of the {expected} asked for"
            return out
    elif finish == "length":
        out.output_tokens = expected
    else:
        out.error = (
            f"stream ended ({finish or 'no finish_reason'}) after {len(out.chunk_times)} chunks, "
            f"not at the {expected} tokens asked for"
        )
        return out
    out.ok = True
    return out


async def _level(
    base_url: str,
    body: dict,
    requests: list[Request],
    concurrency: int,
    request_rate: float | None,
    expected: int,
    seed: int,
    timeout_s: float,
) -> tuple[list[Outcome], float]:
    url = base_url.rstrip("/") + "/v1/completions"
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    semaphore = asyncio.Semaphore(concurrency)
    rng = random.Random(seed)

    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), limits=limits) as client:

        async def capped(request: Request) -> Outcome:
            async with semaphore:
                return await _one(client, url, body, request, expected)

        start = time.perf_counter()
        tasks = []
        for request in requests:
            tasks.append(asyncio.create_task(capped(request)))
            if request_rate is not None:
                await asyncio.sleep(rng.expovariate(request_rate))
        outcomes = await asyncio.gather(*tasks)
        return list(outcomes), time.perf_counter() - start


def run_level(
    base_url: str,
    *,
    model: str,
    requests: list[Request],
    concurrency: int,
    max_tokens: int,
    extra_fields: dict,
    request_rate: float | None = None,
    seed: int = 0,
    timeout_s: float = 600.0,
    slo: Slo | None = None,
) -> LoadLevel:
    body = {"model": model, "max_tokens": max_tokens, "stream": True, "temperature": 0.0, **extra_fields}
    outcomes, duration = asyncio.run(
        _level(base_url, body, requests, concurrency, request_rate, max_tokens, seed, timeout_s)
    )
    return summarize(outcomes, duration, concurrency=concurrency, request_rate=request_rate, slo=slo)


def _counters(done: list[Outcome]) -> EngineCounters | None:
    """The engine's own counters summed over the completed requests, if it sent them for every one."""
    if not done or not all("prompt_n" in o.timings for o in done):
        return None
    drafted = [o for o in done if "draft_n" in o.timings]
    return EngineCounters(
        prompt_tokens_computed=sum(int(o.timings["prompt_n"]) for o in done),
        prompt_tokens_cached=sum(int(o.timings.get("cache_n", 0)) for o in done),
        draft_tokens=sum(int(o.timings["draft_n"]) for o in drafted) if drafted else None,
        draft_tokens_accepted=sum(int(o.timings.get("draft_n_accepted", 0)) for o in drafted) if drafted else None,
    )


def summarize(
    outcomes: list[Outcome],
    duration: float,
    *,
    concurrency: int,
    request_rate: float | None,
    slo: Slo | None = None,
) -> LoadLevel:
    done = [o for o in outcomes if o.ok]
    failed = [o for o in outcomes if not o.ok]
    examples = list(dict.fromkeys(o.error for o in failed))[:ERROR_EXAMPLES]
    prompt = sum(o.prompt_tokens for o in done)
    output = sum(o.output_tokens for o in done)
    counted = {o.counted_by for o in done}
    itl = [1e3 * (b - a) for o in done for a, b in zip(o.chunk_times, o.chunk_times[1:], strict=False)]
    good = [] if slo is None else [o for o in done if slo.met(1e3 * o.ttft_s, o.tpot_ms, 1e3 * o.e2e_s)]
    return LoadLevel(
        concurrency=concurrency,
        request_rate=request_rate,
        requests=len(outcomes),
        completed=len(done),
        errors=len(failed),
        error_examples=examples,
        duration_s=duration,
        prompt_tokens=prompt,
        output_tokens=output,
        output_tokens_counted_by=counted.pop() if len(counted) == 1 else ("mixed" if counted else "none"),
        output_tok_s=output / duration,
        total_tok_s=(prompt + output) / duration,
        requests_per_s=len(done) / duration,
        ttft_ms=Dist.of([1e3 * o.ttft_s for o in done]),
        tpot_ms=Dist.of([o.tpot_ms for o in done if o.tpot_ms is not None]),
        itl_ms=Dist.of(itl),
        e2e_ms=Dist.of([1e3 * o.e2e_s for o in done]),
        slo_met=None if slo is None else len(good),
        goodput_rps=None if slo is None else len(good) / duration,
        engine_counters=_counters(done),
    )
