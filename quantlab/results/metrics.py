"""The measurements a result carries: quality, speed, served load and task scores, as records.

Schema only: these classes are written by the measuring code (`quantlab.bench`) and read by the report, and
importing them loads neither torch nor any runtime, so reading a results file stays cheap.
"""

from __future__ import annotations

import statistics
from typing import Literal

from pydantic import Field

from quantlab.results.fit import Footprint
from quantlab.results.kernels import KvAllocation
from quantlab.results.schema import Schema
from quantlab.results.serving import EnginePython, ServingOptions
from quantlab.results.slo import Slo

PROTOCOL = (
    "token-level; non-overlapping windows of ctx tokens (short last window dropped); all tokens but "
    "the first of each window scored; ppl = exp(mean NLL); KLD = mean KL(baseline || model) per "
    "scored token; top-1 = share of positions where both models' argmax agree"
)


# What each served latency column means, written into every load sweep (quantlab's own and an external target's),
# so a reader comparing with another tool sees which definition a figure uses: quantlab's TPOT is GuideLLM's ITL,
# GuideLLM's TPOT counts the first token, and quantlab's ITL pools chunk gaps over all requests (its median runs
# about half a per-request gap).
LATENCY_DEFINITIONS = {
    "ttft_ms": "per request: request sent → first streamed chunk with text",
    "tpot_ms": "per request: (end of stream − first streamed chunk) / (output tokens − 1); the distribution is "
    "over requests (GuideLLM's ITL; GuideLLM's TPOT includes the first token)",
    "itl_ms": "pooled: every gap between consecutive streamed chunks, of all completed requests together (a chunk "
    "may carry several tokens); not a per-request mean",
    "e2e_ms": "per request: request sent → last byte of the stream",
}


class Quantiles(Schema):
    """A per-token distribution at the points llama-perplexity prints, with its interpolation (linear between
    order statistics; the median of an even count is the mean of the middle two), so a figure here can be set
    beside one from `llama-perplexity --kl-divergence`."""

    min: float
    p0_1: float
    p1: float
    p5: float
    p10: float
    p25: float
    median: float
    p75: float
    p90: float
    p95: float
    p99: float
    p99_9: float
    max: float


class DivergenceDetail(Schema):
    """The rest of llama-perplexity's `--kl-divergence` summary, in its definitions: the KLD distribution, and
    Δp = p_model(right token) − p_baseline(right token) per scored position (a quant that loses confidence in the
    right token shows a negative mean Δp even where its top-1 still agrees). Standard errors as llama.cpp
    computes them: sqrt((mean of squares − square of mean) / (n − 1))."""

    kld: Quantiles
    kld_mean_stderr: float
    delta_p: Quantiles
    delta_p_mean: float
    delta_p_mean_stderr: float
    delta_p_rms: float
    nll_correlation: float  # Pearson r of the per-token NLLs of model and baseline (llama.cpp's Cor(ln PPL))


class BaselineComparison(Schema):
    baseline_digest: str
    baseline_label: str
    baseline_ppl: float
    ppl_ratio: float
    delta_ppl_pct: float
    kld_mean: float
    kld_median: float
    kld_p99: float
    top1_agreement: float  # llama-perplexity's "same top p"
    detail: DivergenceDetail | None = None  # absent from records made before it was measured


class QualityMetrics(Schema):
    ppl: float
    nll_mean: float
    tokens_scored: int
    n_windows: int
    ctx: int
    stride: int
    protocol: str = PROTOCOL
    vs_baseline: BaselineComparison | None = None

    def recovery_pct(self) -> float | None:
        """Quality as % of the baseline: 100 × baseline ppl / ppl (perplexity recovery; 100 = no loss).

        The one definition every table, plot and recommendation uses for the guide's "quality % of FP16", so a
        reader can recompute it from the ppl columns printed next to it.
        """
        return None if self.vs_baseline is None else 100 * self.vs_baseline.baseline_ppl / self.ppl


class Roofline(Schema):
    bandwidth_gb_s: float
    bandwidth_method: str
    bytes_per_token: int
    bytes_detail: str
    limit_tok_s: float
    achieved_tok_s: float
    pct_of_limit: float


class Spread(Schema):
    median: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(median=statistics.median(values), min=min(values), max=max(values), n=len(values))


class SpeedPoint(Schema):
    batch_size: int
    prompt_tokens: int
    new_tokens: int
    prefill_tok_s: Spread  # batch × prompt tokens / prefill seconds
    decode_tok_s: Spread  # batch × (new tokens − 1) / decode seconds: all sequences together
    ttft_ms: Spread  # prefill time, i.e. time to the first new token
    tpot_ms: Spread  # decode time per step (per output token of one sequence)


class Dist(Schema):
    mean: float
    median: float
    p90: float
    p99: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Dist | None:
        if not values:
            return None
        import numpy as np

        a = np.asarray(values, dtype=np.float64)
        return cls(
            mean=float(a.mean()),
            median=float(np.median(a)),
            p90=float(np.percentile(a, 90)),
            p99=float(np.percentile(a, 99)),
            n=len(values),
        )


class EngineCounters(Schema):
    """What the engine itself says it did for a level's completed requests (llama-server's per-request
    `timings`), summed; not derived from quantlab's own counts."""

    prompt_tokens_computed: int  # prompt tokens the engine ran through the model (prefill work)
    prompt_tokens_cached: int  # prompt tokens taken from its cache instead
    draft_tokens: int | None = None  # speculative decoding: tokens the draft proposed
    draft_tokens_accepted: int | None = None  # ... and the target model accepted

    @property
    def acceptance(self) -> float | None:
        return self.draft_tokens_accepted / self.draft_tokens if self.draft_tokens else None

    def tokens_per_step(self, decode_tokens: int) -> float | None:
        """Output tokens per forward step of the target model while decoding: every step emits its own token plus
        the drafted ones it accepted, so steps = decode tokens − accepted. (llama.cpp's "mean len" counts only
        steps that had a draft; this counts all, which is what the speed depends on.)"""
        if self.draft_tokens_accepted is None or decode_tokens <= self.draft_tokens_accepted:
            return None
        return decode_tokens / (decode_tokens - self.draft_tokens_accepted)


class LoadLevel(Schema):
    concurrency: int
    request_rate: float | None  # requests/s (Poisson arrivals); None: all at once, capped by concurrency
    requests: int
    completed: int
    errors: int
    error_examples: list[str]
    duration_s: float
    prompt_tokens: int  # over completed requests
    output_tokens: int
    # usage: the server's own count; finish-length: the server said it stopped at max_tokens (EOS suppressed),
    # so exactly max_tokens (a streamed chunk may carry several tokens, e.g. an unfinished UTF-8 character)
    output_tokens_counted_by: Literal["usage", "finish-length", "mixed", "none"]
    output_tok_s: float
    total_tok_s: float
    requests_per_s: float
    ttft_ms: Dist | None
    tpot_ms: Dist | None
    itl_ms: Dist | None
    e2e_ms: Dist | None
    # with an SLO (LoadSweep.slo): completed requests that met every bound, and their rate (results.slo)
    slo_met: int | None = None
    goodput_rps: float | None = None
    engine_counters: EngineCounters | None = None


class GreedyCheck(Schema):
    """Whether speculative decoding changed any output: the same prompts served greedily without speculation
    (same engine, file and settings) and with it, generated token ids compared one by one."""

    prompts: int
    concurrency: int  # the check's requests ran this many at a time (1: see bench.speculative)
    identical: int  # prompts whose generated ids were the same, token for token
    first_difference: str | None  # where the first differing prompt diverged, or why a request failed

    @property
    def passed(self) -> bool:
        return self.identical == self.prompts


class LoadSweep(Schema):
    """One served artifact measured at several concurrency levels."""

    engine: str
    engine_version: str
    engine_verified: bool  # False: quantlab has not run this engine on a real host before
    batches: bool
    batching: str
    # the engine settings as launched (slots, context, threads, batching and cache switches), without paths
    launch: list[str] = Field(default_factory=list)
    startup_s: float | None  # process start → health answered and one warm-up request completed; None: not started here
    prompt_tokens: int  # per request, as quantlab tokenized the prompt text (the server re-tokenizes it)
    output_tokens: int  # per request, forced (EOS suppressed, see serve.engines)
    prompts: str  # where the prompt texts came from
    memfit: Footprint | None  # the arithmetic for the largest level (batch = concurrency, ctx = prompt+output)
    levels: list[LoadLevel]
    options: ServingOptions = Field(default_factory=ServingOptions)
    shared_prefix_tokens: int = 0  # every prompt began with the same N tokens (before its own prompt_tokens)
    slo: Slo | None = None
    kv_allocation: KvAllocation | None = None
    greedy_check: GreedyCheck | None = None  # with speculative decoding (options.speculative)
    # LATENCY_DEFINITIONS as measured; None in records made before they were written into records
    latency_definitions: dict[str, str] | None = None
    # the interpreter that ran the engine (vLLM); None: an engine only ever run from quantlab's own environment
    # (llama-server, transformers serve), or a record made before it was kept (quantlab's own interpreter then)
    engine_python: EnginePython | None = None


class TaskScore(Schema):
    task: str
    metric: str
    value: float
    stderr: float | None
    higher_is_better: bool
    n_samples: int
    baseline: float | None = None
    recovery_pct: float | None = None


class TaskResults(Schema):
    harness: str  # "lm-eval <version>"
    tasks: list[str]
    task_path: str | None
    limit: int | None
    num_fewshot: int | None
    batch_size: int
    baseline_digest: str | None = None
    scores: list[TaskScore]
