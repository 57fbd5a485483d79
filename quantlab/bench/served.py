"""`bench_load(artifact, ...)`: serve an artifact through a real engine and measure it under concurrent load.

The steps, each of which can fail with one clear line and a stopped server:
1. choose the engine and the rig, check every option (before anything starts);
2. read the kernel label with quantlab's in-process runtime of the same library (llama.cpp, transformers),
   because a server does not say which matmul it runs;
3. cut prompts from the same token stream every quantlab measurement uses (distinct slices per request, none
   reused across levels, so no engine can serve a level from a prefix cache), decode them to text;
4. start the server, wait for it to answer and complete one warm-up request;
5. run each concurrency level, read the server's peak RSS, stop the server, write one Result.
"""

from __future__ import annotations

import contextlib
import gc
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

import quantlab
from quantlab.artifact import Artifact, load_artifact
from quantlab.bench.load import Request, run_level
from quantlab.bench.run import artifact_ref, check_device, resolve_rig, rig_ref, tokenizer_dir
from quantlab.corpus import load_text, token_fingerprint, tokenize
from quantlab.env import host_info, library_versions
from quantlab.errors import BenchError, ServeError
from quantlab.results import (
    BenchSettings,
    CostPoint,
    LoadLevel,
    LoadSweep,
    MemoryMetrics,
    Result,
    RuntimeDescription,
    append_result,
)
from quantlab.rigs import usd_per_million
from quantlab.runtimes import default_device, select_runtime
from quantlab.serve.engines import Engine, select_engine
from quantlab.serve.process import ServerProcess, check_port_free, free_port

Progress = Callable[[str], None]


@dataclass
class LoadOptions:
    concurrency: list[int] = field(default_factory=lambda: [1, 8, 32])
    requests: int | None = None  # per level; None: 2 × concurrency, at least 8
    prompt_tokens: int = 128
    output_tokens: int = 32
    request_rate: float | None = None
    dataset: str = "default"
    engine: str | None = None
    device: str | None = None
    threads: int | None = None
    port: int | None = None
    rig: str | None = None
    rigs_file: str | None = None
    price_per_hour: float | None = None
    startup_timeout_s: float = 600.0
    request_timeout_s: float = 600.0

    def check(self) -> None:
        if not self.concurrency or any(c < 1 for c in self.concurrency):
            raise BenchError(f"--concurrency must be positive integers, got {self.concurrency}")
        if self.requests is not None and self.requests < 1:
            raise BenchError(f"--requests must be ≥ 1, not {self.requests}")
        if self.prompt_tokens < 1 or self.output_tokens < 2:
            raise BenchError("--prompt-tokens must be ≥ 1 and --output-tokens ≥ 2 (TPOT needs two tokens)")
        if self.request_rate is not None and self.request_rate <= 0:
            raise BenchError(f"--request-rate must be positive, not {self.request_rate}")
        if self.threads is not None and self.threads < 1:
            raise BenchError(f"--threads must be ≥ 1, not {self.threads}")

    def requests_at(self, concurrency: int) -> int:
        return self.requests if self.requests is not None else max(2 * concurrency, 8)


def _prompts(artifact: Artifact, options: LoadOptions) -> tuple[list[Request], np.ndarray, object]:
    """Warm-up prompt first, then each level's prompts: consecutive slices of the dataset's token stream."""
    from transformers import AutoTokenizer

    needed = 1 + sum(options.requests_at(c) for c in options.concurrency)
    text, source = load_text(options.dataset, "test")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir(artifact))
    ids = tokenize(tokenizer, text, needed * options.prompt_tokens)
    if len(ids) < needed * options.prompt_tokens:
        raise BenchError(
            f"dataset {options.dataset!r} has {len(ids)} tokens; {needed} prompts of "
            f"{options.prompt_tokens} need {needed * options.prompt_tokens} (use fewer --requests "
            "or shorter --prompt-tokens)"
        )
    rows = ids.reshape(needed, options.prompt_tokens)
    requests = [Request(prompt=tokenizer.decode(row.tolist()), prompt_tokens=options.prompt_tokens) for row in rows]
    return requests, ids, source


def _describe(artifact: Artifact, engine: Engine, device: str, threads: int) -> RuntimeDescription:
    """The engine as the results name it; the kernel read by loading the artifact with the same library."""
    base = dict(
        runtime=f"{engine.name} server",
        runtime_version=engine.version(),
        device=device,
        threads=threads,
        batching=engine.batching,
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


def _memfit(artifact: Artifact, options: LoadOptions):
    from quantlab import memfit

    try:
        arch = memfit.architecture_of_artifact(artifact)
    except Exception:  # the fit is context for the measured peak, not a reason to fail the measurement
        return None
    return memfit.footprint(
        arch,
        batch=max(options.concurrency),
        ctx=options.prompt_tokens + options.output_tokens,
        measured_weight_bytes=artifact.manifest.weight_bytes,
    )


def bench_load(
    artifact_path: str | Path,
    *,
    options: LoadOptions | None = None,
    results_path: str | Path | None = None,
    progress: Progress = lambda _: None,
    cell=None,
) -> Result:
    options = options or LoadOptions()
    options.check()
    artifact = load_artifact(artifact_path)
    device = options.device or default_device()
    check_device(device)
    engine = select_engine(artifact, options.engine, device=device)
    rig = resolve_rig(options.rig, device, rigs_file=options.rigs_file, price_per_hour=options.price_per_hour)
    if options.port is not None:
        check_port_free(options.port)
    threads = options.threads or os.cpu_count() or 1
    requests, ids, source = _prompts(artifact, options)
    name = artifact.path.name
    progress(f"{name}: reading the kernel path")
    description = _describe(artifact, engine, device, threads)
    ctx = options.prompt_tokens + options.output_tokens + 64  # room for BOS/re-tokenization differences
    plan = engine.plan(
        artifact,
        port=options.port or free_port(),
        device=device,
        threads=threads,
        ctx=ctx,
        max_concurrency=max(options.concurrency),
    )
    fixed = engine.fixed_length(options.output_tokens)

    def level(reqs: list[Request], concurrency: int) -> LoadLevel:
        return run_level(
            plan.base_url,
            model=plan.model,
            requests=reqs,
            concurrency=concurrency,
            max_tokens=options.output_tokens,
            extra_fields=fixed,
            request_rate=options.request_rate,
            timeout_s=options.request_timeout_s,
        )

    def warmup() -> None:
        first = level(requests[:1], 1)
        if first.errors:
            raise ServeError(first.error_examples[0])

    levels: list[LoadLevel] = []
    with ServerProcess(plan, name=f"{engine.name} server for {name}") as server:
        progress(f"{name}: starting the {engine.name} server")
        startup = server.wait_ready(
            options.startup_timeout_s,
            warmup=warmup,
            on_wait=lambda s: progress(f"{name}: waiting for the server ({s:.0f} s)"),
        )
        offset = 1
        for concurrency in options.concurrency:
            n = options.requests_at(concurrency)
            progress(f"{name}: concurrency {concurrency}, {n} requests")
            levels.append(level(requests[offset : offset + n], concurrency))
            offset += n
            server.check_alive()
        peak = _server_peak_rss(server.pid)
    memory = (
        MemoryMetrics(
            kind="cpu-peak-rss-server",
            peak_bytes=peak,
            after_load_bytes=0,
            before_load_bytes=0,
            note="peak RSS (VmHWM) of the server process and its children over start-up and every "
            "level; includes the engine's own runtime (Python, the HTTP stack)",
        )
        if device == "cpu" and peak
        else None
    )
    used = ids[: len(requests) * options.prompt_tokens]
    sweep = LoadSweep(
        engine=engine.name,
        engine_version=engine.version(),
        engine_verified=engine.verified,
        batches=engine.batches,
        batching=engine.batching,
        startup_s=startup,
        prompt_tokens=options.prompt_tokens,
        output_tokens=options.output_tokens,
        prompts=f"{len(requests)} consecutive {options.prompt_tokens}-token slices of "
        f"{source.description}, decoded to text (the warm-up request is the first)",
        memfit=_memfit(artifact, options),
        levels=levels,
    )
    cost = [
        CostPoint(
            batch_size=lv.concurrency,
            tokens_per_second=lv.output_tok_s,
            basis="served",
            usd_per_1m_tokens=usd_per_million(rig.price_per_hour, lv.output_tok_s),
        )
        for lv in levels
        if lv.output_tok_s > 0
    ]
    result = Result(
        run_id=datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6],
        timestamp=datetime.now(UTC),
        quantlab_version=quantlab.__version__,
        artifact=artifact_ref(artifact),
        runtime=description,
        rig=rig_ref(rig),
        settings=BenchSettings(
            dataset=source,
            n_tokens=len(used),
            token_fingerprint=token_fingerprint(used),
            ctx=ctx,
            batch_sizes=options.concurrency,
            prompt_tokens=options.prompt_tokens,
            new_tokens=options.output_tokens,
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
        cell=cell,
    )
    if results_path is not None:
        append_result(results_path, result)
    return result
