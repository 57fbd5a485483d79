"""THE bench settings: every in-process and served measurement setting, with its default, bounds and help, once.

`quantlab bench`, `quantlab run` and `quantlab demo` derive their options from this model (quantlab.cli.options),
a recipe's `bench:` section is this model less the rig keys (quantlab.sweep.recipe.RecipeBench), and the library's
`bench()` / `bench_load()` take it. Layers merge with one rule, CLI > recipe > these defaults (`merged`), and only
what a layer really sets is passed on, so no default is written anywhere else.

Each field says in `json_schema_extra["applies"]` which measurement it belongs to: `in-process` (perplexity and
the speed worker), `served` (a real server under load) or `both`; `quantlab bench` refuses a setting of the mode
it is not running rather than ignoring it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, model_validator

from quantlab.results.slo import Slo
from quantlab.spec import DType

Applies = Literal["in-process", "served", "both"]
RIG_FIELDS = ("rig", "rigs_file", "price_per_hour")  # where and at what price: a recipe names them in `rigs`
CELL_FIELDS = ("tensor_parallel",)  # a recipe's cells each declare these: not a recipe-wide or run-wide setting


def _setting(default: Any, help: str, applies: Applies = "in-process", **bounds: Any) -> Any:
    return Field(default, description=help, json_schema_extra={"applies": applies}, **bounds)


class BenchConfig(BaseModel):
    """How artifacts are measured. Field descriptions are the CLI's help texts."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = _setting(
        "default",
        "Evaluation text: 'default' (hub wikitext-2-raw if reachable, else the embedded WikiText-2), 'wikitext2', "
        "'embedded', or a .txt/.jsonl path. Served runs cut their prompts from it.",
        "both",
    )
    ctx: int = _setting(512, "Perplexity window length in tokens.", ge=2)
    max_tokens: int = _setting(4096, "Cut the evaluation token stream to this many tokens.", ge=2)
    batch_sizes: list[PositiveInt] = _setting([1, 8], "Batch sizes of the speed runs.", min_length=1)
    prompt_tokens: int = _setting(128, "Prompt length of the speed runs and of each served request.", "both", ge=1)
    new_tokens: int = _setting(
        32, "Tokens generated per sequence (per served request: forced, EOS suppressed).", "both", ge=2
    )
    warmup: int = _setting(1, "Untimed runs before the timed ones.", ge=0)
    repeats: int = _setting(3, "Timed runs per batch size; tables show their median.", ge=1)
    quality: bool = _setting(True, "Measure perplexity, and KLD/top-1 against the baseline.")
    speed: bool = _setting(True, "Measure prefill/decode tok/s and peak memory (fresh process per artifact).")
    dtype: DType = _setting("auto", "Compute dtype: auto (the artifact's) | fp32 | bf16 | fp16.")
    compile: bool | None = _setting(
        None,
        "Decode speed through a static KV cache and torch.compile (CUDA graphs on a GPU), compilation untimed "
        "and recorded; a model that does not compile whole runs eager and the result says why. transformers "
        "runtime only. Default: on with CUDA, off on a CPU (compiling costs minutes on few cores).",
    )
    profile: bool | None = _setting(
        None,
        "Profile one more batch-1 generation's decode steps (torch.profiler, after the timed runs) and record its "
        "top ops: where the decode time goes. transformers runtime. Default: on with CUDA, off on a CPU.",
    )
    runtime: str | None = _setting(
        None, "In-process runtime (transformers | llamacpp); default: the one that loads the format."
    )
    kernel: Literal["gemlite"] | None = _setting(
        None,
        "Matmul kernel instead of the format's own, for the quantized artifacts (never the --baseline; an "
        "unquantized one stays dense). gemlite: Triton GEMV/GEMM on a compressed-tensors checkpoint's stored "
        "weights (int4/int8 weight-only; FP8 with channel scales, with or without per-token FP8 activations), "
        "handed over at load, artifact unchanged (transformers runtime, CUDA, pip install gemlite). Default: the "
        "format's (compressed-tensors decompresses to the compute dtype).",
    )
    device: str | None = _setting(None, "cpu or cuda[:N]; default: cuda:0 if present.", "both")
    tensor_parallel: PositiveInt = _setting(
        1,
        "GPUs one copy of the model spans, from --device on, measured as a rig of exactly that many GPUs. Served: "
        "vLLM --tensor-parallel-size. In-process (transformers runtime): accelerate's device_map places the layers "
        "over them, a layer split (one GPU computes at a time), not tensor parallelism; the baseline is placed the "
        "same way. llama.cpp and transformers serve refuse more than 1.",
        "both",
    )
    tasks: list[str] | None = _setting(
        None,
        "lm-eval tasks scored on each artifact (and the baseline, for recovery), e.g. quantlab_wikitext_nextword "
        "(shipped, offline) or arc_easy,hellaswag (hub datasets).",
    )
    task_path: str | None = _setting(None, "Folder of lm-eval task YAMLs (local datasets).")
    task_limit: PositiveInt | None = _setting(None, "Score only the first N documents per task.")
    num_fewshot: int | None = _setting(None, "Few-shot examples per task prompt.", ge=0)
    task_batch_size: PositiveInt = _setting(8, "Batch size lm-eval scores with.")
    concurrency: list[PositiveInt] = _setting(
        [1, 8, 32], "Concurrency levels of a served sweep.", "served", min_length=1
    )
    requests: PositiveInt | None = _setting(
        None, "Requests per concurrency level; default 2 × concurrency, at least 8.", "served"
    )
    request_rate: PositiveFloat | None = _setting(
        None,
        "Poisson arrivals at this many requests/s (capped by the concurrency); default: all at once.",
        "served",
        allow_inf_nan=False,
    )
    engine: str | None = _setting(
        None,
        "Serving engine: llamacpp | transformers | vllm; default: the first installed one that serves the format.",
        "served",
    )
    vllm_python: str | None = _setting(
        None,
        "Python interpreter that runs vLLM (--engine vllm), e.g. the bin/python of a virtualenv of its own: vLLM's "
        "torch and compressed-tensors pins conflict with quantlab's. Probed for its vllm version, which the record "
        "keeps with the path. Default: $QUANTLAB_VLLM_PYTHON, else quantlab's own Python.",
        "served",
    )
    threads: PositiveInt | None = _setting(None, "CPU threads of the server; default: all cores.", "served")
    kv_cache_dtype: str | None = _setting(
        None,
        "KV-cache type: llama.cpp f16 | q8_0 | q4_0 (K and V; a quantized V turns flash attention on), vLLM fp8. "
        "In-process it applies to the artifacts, never the --baseline: bench an artifact against itself to get "
        "the quantized cache's KLD. Default: the engine's (f16).",
        "both",
    )
    prefix_cache: bool = _setting(
        False,
        "Let the server reuse the KV cache of prompt prefixes it has computed (llama-server's prompt cache, "
        "vLLM's prefix caching). Off: every request is prefilled in full.",
        "served",
    )
    shared_prefix_tokens: int = _setting(
        0,
        "Start every served prompt with the same N tokens (a shared system prompt) before its own "
        "--prompt-tokens slice.",
        "served",
        ge=0,
    )
    draft: str | None = _setting(
        None,
        "Speculative decoding: a draft artifact (a cheaper GGUF of the same model, e.g. Q4_0 drafting for Q8_0), or "
        "'ngram' for draft-free prompt lookup. Every such sweep also checks that greedy outputs do not change.",
        "served",
    )
    draft_tokens: PositiveInt | None = _setting(
        None, "Tokens drafted per step at most (with --draft); default: the engine's.", "served"
    )
    slo: Slo | None = _setting(
        None,
        "Service-level objective, e.g. ttft_ms=500,tpot_ms=50[,e2e_ms=2000]: per level, the share of requests "
        "meeting every bound and goodput (such requests/s; vLLM bench serve's definition).",
        "served",
    )
    rig: str | None = _setting(
        None, "Rig the measurement runs on (prices $/1M); default 'cpu' on a CPU host. See 'quantlab rigs'.", "both"
    )
    rigs_file: str | None = _setting(None, "YAML file adding or overriding rigs.", "both")
    price_per_hour: PositiveFloat | None = _setting(None, "Override the rig's $/hour.", "both", allow_inf_nan=False)

    @model_validator(mode="after")
    def _consistent(self) -> BenchConfig:
        if self.max_tokens < self.ctx:
            raise ValueError(f"--max-tokens {self.max_tokens} is shorter than one window of --ctx {self.ctx}")
        if self.tasks and not self.quality:
            raise ValueError("--tasks runs with the quality pass; drop --no-quality")
        return self

    @classmethod
    def merged(cls, *layers: dict[str, Any]) -> BenchConfig:
        """The settings of several layers, later ones winning (defaults < recipe < CLI); each layer holds only the
        keys it really sets."""
        values: dict[str, Any] = {}
        for layer in layers:
            values.update({key: value for key, value in layer.items() if value is not None})
        return cls.model_validate(values)

    def requests_at(self, concurrency: int) -> int:
        return self.requests if self.requests is not None else max(2 * concurrency, 8)


def applies(name: str) -> Applies:
    return BenchConfig.model_fields[name].json_schema_extra["applies"]


def given(config: BaseModel) -> dict[str, Any]:
    """The fields a layer set explicitly (a recipe's keys, a model built from CLI options)."""
    return config.model_dump(include=config.model_fields_set)
