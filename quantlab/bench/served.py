"""`bench_load(artifact, ...)`: serve an artifact through a real engine and measure it under concurrent load.

The steps, each of which can fail with one clear line and a stopped server:
1. choose the engine and the rig, check every option (before anything starts);
2. read the kernel label with quantlab's in-process runtime of the same library (llama.cpp, transformers),
   because a server does not say which matmul it runs;
3. cut prompts from the same token stream every quantlab measurement uses (distinct slices per request, none
   reused across levels, so no engine can serve a level from a prefix cache), decode them to text; with a
   shared prefix, every prompt is the same first N tokens of the stream followed by its own slice;
4. start the server, wait for it to answer and complete one warm-up request;
5. run each concurrency level, read the server's peak RSS, stop the server, write one Result.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

import quantlab
from quantlab.artifact import Artifact, load_artifact
from quantlab.bench import records
from quantlab.bench.config import BenchConfig
from quantlab.bench.loadgen import Request, run_level
from quantlab.bench.prepare import resolve_device, resolve_rig, tokenizer_dir
from quantlab.corpus import TextSource, load_text, token_fingerprint, tokenize
from quantlab.env import host_info, library_versions
from quantlab.errors import BenchError, ServeError
from quantlab.results import (
    BenchSettings,
    CellRef,
    CostPoint,
    KvAllocation,
    LoadLevel,
    LoadSweep,
    MemoryMetrics,
    Result,
    RuntimeDescription,
    append_result,
)
from quantlab.rigs import usd_per_million
from quantlab.runtimes import select_runtime
from quantlab.serve.engines import Engine, LaunchPlan, select_engine
from quantlab.serve.options import ServingOptions
from quantlab.serve.process import ServerProcess, check_port_free, free_port

Progress = Callable[[str], None]
CTX_MARGIN = 64  # tokens of context beyond prompt + output: room for BOS and re-tokenization differences


@dataclass
class Prompts:
    requests: list[Request]  # the warm-up request first, then each level's in order
    ids: np.ndarray
    source: TextSource


def _prompts(artifact: Artifact, config: BenchConfig) -> Prompts:
    """Consecutive slices of the dataset's token stream, decoded to text."""
    from transformers import AutoTokenizer

    needed = 1 + sum(config.requests_at(c) for c in config.concurrency)
    shared = config.shared_prefix_tokens
    text, source = load_text(config.dataset, "test")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir(artifact))
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


def _describe(artifact: Artifact, engine: Engine, device: str, threads: int) -> RuntimeDescription:
    """The engine as the results name it; the kernel read by loading the artifact with the same library."""
    base = dict(
        runtime=f"{engine.name} server",
        runtime_version=engine.version(),
        device=device,
        threads=threads,
        batching=engine.batching_note,
    )
    if engine.name == "vllm":
        return RuntimeDescription(
            **base,
            device_name=device,
            compute_dtype="auto",
            kernel="unknown",
            kernel_detail="vLLM chooses its kernel at load time; quantlab does not read it "
            "back (engine not verified by quantlab)",
        )
    runtime = select_runtime(artifact, engine.same_library_runtime)
    session = runtime.load(artifact, device=device)
    try:
        inner = session.describe()
    finally:
        session.close()
        del session
        gc.collect()
    return RuntimeDescription(
        **base,
        device_name=inner.device_name,
        compute_dtype=inner.compute_dtype,
        kernel=inner.kernel,
        kernel_detail=f"{inner.kernel_detail} (read by loading the artifact in-process with "
        f"{inner.runtime} {inner.runtime_version}, the library the server runs)",
    )


def _server_peak_rss(pid: int) -> int:
    """Sum of VmHWM (peak RSS since exec) over the server and its child processes."""
    import psutil

    from quantlab.bench.worker import vm_hwm

    total = 0
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for proc in procs:
        peak = vm_hwm(proc.pid)
        if peak is not None:
            total += peak
            continue
        with contextlib.suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss  # no /proc status (not Linux): the current RSS, a lower bound
    return total


def _memfit(artifact: Artifact, config: BenchConfig):
    from quantlab import memfit

    try:
        arch = memfit.architecture_of_artifact(artifact)
    except Exception:  # the fit is context for the measured peak, not a reason to fail the measurement
        return None
    return memfit.footprint(
        arch,
        batch=max(config.concurrency),
        ctx=config.prompt_tokens + config.new_tokens,
        measured_weight_bytes=artifact.manifest.weight_bytes,
    )


def _sweep(
    plan: LaunchPlan,
    engine: Engine,
    prompts: Prompts,
    config: BenchConfig,
    name: str,
    progress: Progress,
    *,
    startup_timeout_s: float,
    request_timeout_s: float,
) -> tuple[float, list[LoadLevel], int, KvAllocation | None]:
    """Start the server, warm it up, run every level; (start-up seconds, levels, the server's peak RSS, the KV
    cache it says it allocated)."""
    fixed = engine.request_fields(config.new_tokens, _options(config))

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
        return startup, levels, _server_peak_rss(server.pid), engine.kv_allocation(server.log_text())


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
    engine = select_engine(artifact, config.engine, device=device)
    engine.check_options(_options(config))
    rig = resolve_rig(config, device)
    if port is not None:
        check_port_free(port)
    threads = config.threads or os.cpu_count() or 1
    prompts = _prompts(artifact, config)
    name = artifact.path.name
    progress(f"{name}: reading the kernel path")
    description = _describe(artifact, engine, device, threads)
    ctx = config.shared_prefix_tokens + config.prompt_tokens + config.new_tokens + CTX_MARGIN
    plan = engine.plan(
        artifact,
        port=port or free_port(),
        device=device,
        threads=threads,
        ctx=ctx,
        max_concurrency=max(config.concurrency),
        options=_options(config),
    )
    startup, levels, peak, kv = _sweep(
        plan,
        engine,
        prompts,
        config,
        name,
        progress,
        startup_timeout_s=startup_timeout_s,
        request_timeout_s=request_timeout_s,
    )
    sweep = _load_sweep(engine, plan, startup, prompts, config, _memfit(artifact, config), levels)
    sweep.kv_allocation = kv
    result = _served_result(artifact, description, rig, config, prompts, ctx, sweep, peak if device == "cpu" else 0)
    result.cell = cell
    if results_path is not None:
        append_result(results_path, result)
    return result


def _load_sweep(
    engine: Engine, plan: LaunchPlan, startup: float, prompts: Prompts, config: BenchConfig, memfit, levels
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
        options=_options(config),
        shared_prefix_tokens=config.shared_prefix_tokens,
        slo=config.slo,
    )


def _options(config: BenchConfig) -> ServingOptions:
    return ServingOptions(kv_cache_dtype=config.kv_cache_dtype, prefix_cache=config.prefix_cache)


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
        quantlab_version=quantlab.__version__,
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
