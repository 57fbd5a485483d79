"""The plan of a served sweep: every choice and every check made before anything starts.

The engine (the named one, or the first installed one that serves the format on this device), the serving levers
(KV-cache type, prefix cache, tensor parallelism, and the speculative draft, loaded and checked against the
served artifact), the rig, the workload (prompts cut from the same token stream every quantlab measurement uses:
distinct slices per request, none reused across levels, so no engine can serve a level from a prefix cache; with
a shared prefix, every prompt is the same first N tokens followed by its own slice), and the engine's launch
plans: the sweep's server, and with speculation the same server without it for the greedy check. A request that
cannot be served fails here, in one line, with no server started.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from quantlab.artifact import Artifact, load_artifact
from quantlab.bench.config import BenchConfig
from quantlab.bench.loadgen import Request
from quantlab.bench.prepare import resolve_device, resolve_rig, tokenizer_dir, tokenizer_key
from quantlab.corpus import load_text, tokenize
from quantlab.errors import BenchError
from quantlab.results import NGRAM, Footprint, ServingOptions, TextSource
from quantlab.rigs import Rig
from quantlab.serve.engines import Engine, LaunchPlan, select_engine
from quantlab.serve.process import check_port_free, free_port

CTX_MARGIN = 64  # tokens of context beyond prompt + output: room for BOS and re-tokenization differences
CHECK_PROMPTS = 8  # prompts of the greedy check a speculative sweep records (see bench.speculative)


@dataclass(frozen=True)
class Prompts:
    requests: list[Request]  # the warm-up request first, then each level's in order
    ids: np.ndarray
    source: TextSource


@dataclass(frozen=True)
class ServedPlan:
    artifact: Artifact
    config: BenchConfig
    device: str
    rig: Rig
    engine: Engine
    options: ServingOptions
    threads: int
    prompts: Prompts
    ctx: int  # context per request (per server slot)
    launch: LaunchPlan  # the sweep's server
    reference: LaunchPlan | None  # with speculation: the same server without it, for the greedy check
    check: list[Request]  # the greedy check's prompts (none without speculation)
    memfit: Footprint | None  # the memory-fit arithmetic for the largest level, beside the measured peak

    @property
    def name(self) -> str:
        return self.artifact.path.name


def plan_served(artifact_path: str | Path, config: BenchConfig, *, port: int | None = None) -> ServedPlan:
    artifact = load_artifact(artifact_path)
    device = resolve_device(config)
    engine, options = engine_and_options(artifact, config, device)
    rig = resolve_rig(config, device)
    if port is not None:
        check_port_free(port)
    threads = config.threads or os.cpu_count() or 1
    prompts = cut_prompts(artifact, config)
    ctx = slot_context(artifact, config)
    launch = functools.partial(
        engine.plan, artifact, port=port or free_port(), device=device, threads=threads, ctx=ctx,
        max_concurrency=max(config.concurrency),
    )  # fmt: skip
    return ServedPlan(
        artifact=artifact,
        config=config,
        device=device,
        rig=rig,
        engine=engine,
        options=options,
        threads=threads,
        prompts=prompts,
        ctx=ctx,
        launch=launch(options=options),
        reference=launch(options=without_speculation(options)) if options.speculative else None,
        check=prompts.requests[1 : 1 + CHECK_PROMPTS] if options.speculative else [],
        memfit=memfit_for(artifact, config),
    )


def engine_and_options(artifact: Artifact, config: BenchConfig, device: str) -> tuple[Engine, ServingOptions]:
    """The engine that serves `artifact` on `device` (the named one, or the first installed one that can), and
    the levers asked for, the draft loaded and checked; a lever the engine lacks is refused now, and so is
    `--vllm-python` for another engine than vLLM. `quantlab serve` asks the same."""
    engine = select_engine(
        artifact, config.engine, device=device, gpus=config.tensor_parallel, vllm_python=config.vllm_python
    )
    if config.vllm_python and engine.name != "vllm":  # a setting given is never ignored (the variable may be)
        raise BenchError(
            f"--vllm-python names the Python that runs vLLM, and {artifact.path.name} is served by {engine.name!r} "
            "(add --engine vllm, or drop --vllm-python)"
        )
    options = ServingOptions(
        kv_cache_dtype=config.kv_cache_dtype,
        prefix_cache=config.prefix_cache,
        tensor_parallel=config.tensor_parallel,
        **draft_options(artifact, config),
    )
    engine.check_options(options)
    return engine, options


def draft_options(artifact: Artifact, config: BenchConfig) -> dict:
    """The ServingOptions fields of `--draft` (an artifact, or `ngram`), checked against the served artifact."""
    if config.draft is None:
        if config.draft_tokens is not None:
            raise BenchError("--draft-tokens needs --draft (an artifact, or ngram)")
        return {}
    if config.draft == NGRAM:
        return {"speculative": "ngram", "draft_tokens": config.draft_tokens}
    draft = load_artifact(config.draft)
    if draft.manifest.gguf is None or artifact.manifest.gguf is None:
        raise BenchError(
            f"--draft {config.draft}: llama-server drafts with a GGUF for a GGUF; this pair is "
            f"{draft.manifest.format} for {artifact.manifest.format}"
        )
    if tokenizer_key(tokenizer_dir(draft)) != tokenizer_key(tokenizer_dir(artifact)):
        raise BenchError(
            f"--draft {config.draft}: its tokenizer is not {artifact.path.name}'s, so its token ids would "
            "mean other tokens (draft with a quantization of the same model)"
        )
    return {
        "speculative": "draft",
        "draft": draft_label(draft, artifact),
        "draft_digest": draft.digest,
        "draft_tokens": config.draft_tokens,
        "draft_path": str(draft.path / draft.manifest.gguf.file),
    }


def draft_label(draft: Artifact, artifact: Artifact) -> str:
    """The draft's format, and its depth where it has fewer layers than the served model (a self-speculation
    draft cut from the model's first layers): two drafts of one format then read as two rows."""
    mine, theirs = _config(draft).get("num_hidden_layers"), _config(artifact).get("num_hidden_layers")
    if mine and theirs and mine < theirs:
        return f"{draft.manifest.format}, first {mine} of {theirs} layers"
    return draft.manifest.format


def _config(artifact: Artifact) -> dict:
    """The artifact's config.json as a dict (a GGUF's is its source model's); empty when it cannot be read."""
    from quantlab.memfit import config_dir

    with contextlib.suppress(OSError, ValueError):
        return json.loads((config_dir(artifact) / "config.json").read_text())
    return {}


def slot_context(artifact: Artifact, config: BenchConfig) -> int:
    """Context per server slot: prompt (shared prefix included) + output + a margin, capped at the model's own
    maximum context; a workload that needs more than that maximum is refused before any server starts."""
    needed = config.shared_prefix_tokens + config.prompt_tokens + config.new_tokens
    limit = _config(artifact).get("max_position_embeddings")
    if limit and needed > limit:
        raise BenchError(
            f"each request needs {needed} tokens of context (prompt {config.shared_prefix_tokens} + "
            f"{config.prompt_tokens}, output {config.new_tokens}); {artifact.path.name} allows {limit}"
        )
    return min(needed + CTX_MARGIN, limit) if limit else needed + CTX_MARGIN


def without_speculation(options: ServingOptions) -> ServingOptions:
    update = {"speculative": None, "draft": None, "draft_digest": None, "draft_tokens": None, "draft_path": None}
    return options.model_copy(update=update)


def cut_prompts(artifact: Artifact, config: BenchConfig) -> Prompts:
    """Consecutive slices of the dataset's token stream, decoded to text (the servers take text)."""
    return cut_prompts_with(tokenizer_dir(artifact), config)


def cut_prompts_with(tokenizer_directory: Path, config: BenchConfig) -> Prompts:
    """`cut_prompts` with a given tokenizer: an external server's artifact may be unknown (`bench.target`)."""
    from transformers import AutoTokenizer

    needed = 1 + sum(config.requests_at(c) for c in config.concurrency)
    shared = config.shared_prefix_tokens
    text, source = load_text(config.dataset, "test")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_directory)
    total = shared + needed * config.prompt_tokens
    ids = tokenize(tokenizer, text, total)
    if len(ids) < total:
        raise BenchError(
            f"dataset {config.dataset!r} has {len(ids)} tokens; {needed} prompts of {config.prompt_tokens}"
            + (f" after a {shared}-token shared prefix" if shared else "")
            + f" need {total} (use fewer --requests or shorter --prompt-tokens)"
        )
    prefix, rows = ids[:shared].tolist(), ids[shared:].reshape(needed, config.prompt_tokens)
    requests = [
        Request(prompt=tokenizer.decode(prefix + row.tolist()), prompt_tokens=shared + config.prompt_tokens)
        for row in rows
    ]
    return Prompts(requests=requests, ids=ids, source=source)


def memfit_for(artifact: Artifact, config: BenchConfig) -> Footprint | None:
    from quantlab import memfit

    try:
        arch = memfit.architecture_of_artifact(artifact)
    except Exception:  # the fit is context for the measured peak, not a reason to fail the measurement
        return None
    asked = memfit.kv_dtype_of(config.kv_cache_dtype) if config.kv_cache_dtype else None
    return memfit.footprint(
        arch,
        batch=max(config.concurrency),
        ctx=config.shared_prefix_tokens + config.prompt_tokens + config.new_tokens,
        kv_dtype=asked if asked in memfit.KV_DTYPE_BYTES else "bf16",
        measured_weight_bytes=artifact.manifest.weight_bytes,
    )
