"""`bench_load(artifact, ...)`: serve an artifact through a real engine and measure it under concurrent load.

The steps, each of which can fail with one clear line and a stopped server:
1. choose the engine and the rig, check every option (before anything starts);
2. read the kernel label with quantlab's in-process runtime of the same library (llama.cpp, transformers),
   because a server does not say which matmul it runs;
3. cut prompts from the same token stream every quantlab measurement uses (distinct slices per request, none
   reused across levels, so no engine can serve a level from a prefix cache), decode them to text; with a
   shared prefix, every prompt is the same first N tokens of the stream followed by its own slice;
4. with speculative decoding, generate the greedy check's prompts on a server without it (`bench.speculative`);
5. start the server, wait for it to answer and complete one warm-up request;
6. run each concurrency level (then the greedy check's prompts), read the server's peak RSS and the KV cache it
   allocated, stop the server, write one Result.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from quantlab.artifact import load_artifact
from quantlab.bench import records, speculative
from quantlab.bench.config import BenchConfig
from quantlab.bench.loadgen import Request, run_level
from quantlab.bench.prepare import resolve_device, resolve_rig
from quantlab.bench.served_inputs import Prompts, cut_prompts, describe_engine, memfit_for, server_peak_rss
from quantlab.corpus import token_fingerprint
from quantlab.env import host_info, library_versions, quantlab_version
from quantlab.errors import ServeError
from quantlab.results import (
    BenchSettings,
    CellRef,
    CostPoint,
    KvAllocation,
    LoadLevel,
    LoadSweep,
    MemoryMetrics,
    Result,
    append_result,
)
from quantlab.results.serving import ServingOptions
from quantlab.rigs import usd_per_million
from quantlab.serve.engines import Engine, LaunchPlan, select_engine
from quantlab.serve.process import ServerProcess, check_port_free, free_port

Progress = Callable[[str], None]
CTX_MARGIN = 64  # tokens of context beyond prompt + output: room for BOS and re-tokenization differences


@dataclass
class SweepRun:
    startup_s: float
    levels: list[LoadLevel]
    peak_rss: int
    kv: KvAllocation | None  # the KV cache the server says it allocated
    check_ids: list | None  # the greedy check prompts' generated ids, after the levels


def _sweep(
    plan: LaunchPlan,
    engine: Engine,
    options: ServingOptions,
    prompts: Prompts,
    config: BenchConfig,
    name: str,
    progress: Progress,
    *,
    check: list[Request] | None,
    startup_timeout_s: float,
    request_timeout_s: float,
) -> SweepRun:
    """Start the server, warm it up, run every level (then the greedy check's prompts, if any)."""
    fixed = engine.request_fields(config.new_tokens, options)

    def level(reqs: list[Request], concurrency: int) -> LoadLevel:
        return run_level(
            plan.base_url,
            model=plan.model,
            requests=reqs,
            concurrency=concurrency,
            max_tokens=config.new_tokens,
            extra_fields=fixed,
            request_rate=config.request_rate,
            timeout_s=request_timeout_s,
            slo=config.slo,
        )

    def warmup() -> None:
        first = level(prompts.requests[:1], 1)
        if first.errors:
            raise ServeError(first.error_examples[0])

    levels: list[LoadLevel] = []
    with ServerProcess(plan, name=f"{engine.name} server for {name}") as server:
        progress(f"{name}: starting the {engine.name} server")
        startup = server.wait_ready(
            startup_timeout_s, warmup=warmup, on_wait=lambda s: progress(f"{name}: waiting for the server ({s:.0f} s)")
        )
        offset = 1
        for concurrency in config.concurrency:
            n = config.requests_at(concurrency)
            progress(f"{name}: concurrency {concurrency}, {n} requests")
            levels.append(level(prompts.requests[offset : offset + n], concurrency))
            offset += n
            server.check_alive()
        peak = server_peak_rss(server.pid)
        checked = None
        if check:
            progress(f"{name}: greedy check, {len(check)} prompts with speculation")
            checked = speculative.greedy_ids(engine, plan, options, check, config.new_tokens)
        return SweepRun(startup, levels, peak, engine.kv_allocation(server.log_text()), checked)


def bench_load(
    artifact_path: str | Path,
    *,
    config: BenchConfig | None = None,
    results_path: str | Path | None = None,
    progress: Progress = lambda _: None,
    cell: CellRef | None = None,
    port: int | None = None,
    startup_timeout_s: float = 600.0,
    request_timeout_s: float = 600.0,
) -> Result:
    config = config or BenchConfig()
    artifact = load_artifact(artifact_path)
    device = resolve_device(config)
    engine = select_engine(artifact, config.engine, device=device, gpus=config.tensor_parallel)
    options = _serving_options(artifact, config, engine)
    rig = resolve_rig(config, device)
    if port is not None:
        check_port_free(port)
    threads = config.threads or os.cpu_count() or 1
    prompts = cut_prompts(artifact, config)
    name = artifact.path.name
    progress(f"{name}: reading the kernel path")
    description = describe_engine(artifact, engine, device, threads)
    ctx = config.shared_prefix_tokens + config.prompt_tokens + config.new_tokens + CTX_MARGIN

    make_plan = functools.partial(
        engine.plan, artifact, port=port or free_port(), device=device, threads=threads, ctx=ctx,
        max_concurrency=max(config.concurrency),
    )  # fmt: skip
    check, reference = None, None
    if options.speculative:
        check = prompts.requests[1 : 1 + speculative.CHECK_PROMPTS]
        progress(f"{name}: greedy check, {len(check)} prompts without speculation")
        reference = speculative.reference_ids(engine, make_plan, options, check, config.new_tokens, startup_timeout_s)
    plan = make_plan(options=options)
    run = _sweep(
        plan,
        engine,
        options,
        prompts,
        config,
        name,
        progress,
        check=check,
        startup_timeout_s=startup_timeout_s,
        request_timeout_s=request_timeout_s,
    )
    sweep = _load_sweep(engine, plan, options, run.startup_s, prompts, config, memfit_for(artifact, config), run.levels)
    sweep.kv_allocation = run.kv
    if reference is not None:
        sweep.greedy_check = speculative.compare(reference, run.check_ids)
    peak = run.peak_rss if device == "cpu" else 0
    result = _served_result(artifact, description, rig, config, prompts, ctx, sweep, peak)
    result.cell = cell
    if results_path is not None:
        append_result(results_path, result)
    return result


def _serving_options(artifact, config: BenchConfig, engine: Engine) -> ServingOptions:
    """The levers asked for, resolved (the draft loaded and checked) and refused now if the engine lacks one."""
    options = ServingOptions(
        kv_cache_dtype=config.kv_cache_dtype,
        prefix_cache=config.prefix_cache,
        tensor_parallel=config.tensor_parallel,
        **speculative.draft_options(artifact, config),
    )
    engine.check_options(options)
    return options


def _load_sweep(
    engine: Engine,
    plan: LaunchPlan,
    options: ServingOptions,
    startup: float,
    prompts: Prompts,
    config: BenchConfig,
    memfit,
    levels,
) -> LoadSweep:
    return LoadSweep(
        engine=engine.name,
        engine_version=engine.version(),
        engine_verified=engine.verified,
        batches=engine.batches_requests,
        batching=engine.batching_note,
        launch=plan.flags,
        startup_s=startup,
        prompt_tokens=config.shared_prefix_tokens + config.prompt_tokens,
        output_tokens=config.new_tokens,
        prompts=(
            f"the first {config.shared_prefix_tokens} tokens of the stream (shared), then "
            if config.shared_prefix_tokens
            else ""
        )
        + f"{len(prompts.requests)} consecutive {config.prompt_tokens}-token slices of "
        f"{prompts.source.description}, decoded to text (the warm-up request is the first)",
        memfit=memfit,
        levels=levels,
        options=options,
        shared_prefix_tokens=config.shared_prefix_tokens,
        slo=config.slo,
    )


def _served_result(
    artifact, description, rig, config: BenchConfig, prompts: Prompts, ctx: int, sweep: LoadSweep, peak: int
) -> Result:
    memory = (
        MemoryMetrics(
            kind="cpu-peak-rss-server",
            peak_bytes=peak,
            after_load_bytes=0,
            before_load_bytes=0,
            note="peak RSS (VmHWM) of the server process and its children over start-up and every "
            "level; includes the engine's own runtime (Python, the HTTP stack)",
        )
        if peak
        else None
    )
    cost = [
        CostPoint(
            batch_size=lv.concurrency,
            tokens_per_second=lv.output_tok_s,
            basis="served",
            usd_per_1m_tokens=usd_per_million(rig.price_per_hour, lv.output_tok_s),
        )
        for lv in sweep.levels
        if lv.output_tok_s > 0
    ]
    used = prompts.ids[: len(prompts.requests) * config.prompt_tokens]
    return Result(
        run_id=records.new_run_id(),
        timestamp=datetime.now(UTC),
        quantlab_version=quantlab_version(),
        artifact=records.artifact_ref(artifact),
        runtime=description,
        rig=records.rig_ref(rig),
        settings=BenchSettings(
            dataset=prompts.source,
            n_tokens=len(used),
            token_fingerprint=token_fingerprint(used),
            ctx=ctx,
            batch_sizes=config.concurrency,
            prompt_tokens=config.prompt_tokens,
            new_tokens=config.new_tokens,
            warmup=1,
            repeats=1,
        ),
        quality=None,
        speed=[],
        memory=memory,
        cost=cost,
        libraries=library_versions(),
        host=host_info(),
        load=sweep,
    )
