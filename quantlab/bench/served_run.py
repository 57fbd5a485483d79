"""Running a served sweep's plan: the kernel label, the servers, the levels and the greedy check.

1. read the kernel label by loading the artifact in-process with quantlab's runtime of the library the server
   runs (a server does not say which matmul it runs);
2. with speculative decoding, generate the greedy check's prompts on a server without it (`bench.speculative`);
3. start the sweep's server, wait for it to answer and complete one warm-up request;
4. run each concurrency level (then the greedy check's prompts), read the server's peak RSS and the KV cache it
   allocated, and stop it. Every step can fail with one clear line, and leaves no server running.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable
from dataclasses import dataclass

from quantlab.bench import speculative
from quantlab.bench.loadgen import Request, run_level
from quantlab.bench.served_plan import ServedPlan
from quantlab.errors import ServeError
from quantlab.results import GreedyCheck, KvAllocation, LoadLevel, RuntimeDescription
from quantlab.serve.process import ServerProcess

Progress = Callable[[str], None]


@dataclass
class ServedRun:
    description: RuntimeDescription  # the engine, with the kernel path read in-process
    startup_s: float  # process start → health answered and one warm-up request completed
    levels: list[LoadLevel]
    peak_rss: int  # the server and its children, over start-up and every level
    kv: KvAllocation | None  # the KV cache the server says it allocated
    greedy: GreedyCheck | None  # with speculation: its outputs against the same server's without it


def run_served(
    plan: ServedPlan, progress: Progress, *, startup_timeout_s: float, request_timeout_s: float
) -> ServedRun:
    progress(f"{plan.name}: reading the kernel path")
    description = describe_engine(plan)
    reference = None
    if plan.reference is not None:
        progress(f"{plan.name}: greedy check, {len(plan.check)} prompts without speculation")
        reference = speculative.reference_ids(plan, startup_timeout_s)
    fixed = plan.engine.request_fields(plan.config.new_tokens, plan.options)

    def level(requests: list[Request], concurrency: int) -> LoadLevel:
        c = plan.config
        return run_level(
            plan.launch.base_url, model=plan.launch.model, requests=requests, concurrency=concurrency,
            max_tokens=c.new_tokens, extra_fields=fixed, request_rate=c.request_rate, timeout_s=request_timeout_s,
            slo=c.slo,
        )  # fmt: skip

    def warmup() -> None:
        first = level(plan.prompts.requests[:1], 1)
        if first.errors:
            raise ServeError(first.error_examples[0])

    levels: list[LoadLevel] = []
    with ServerProcess(plan.launch, name=f"{plan.engine.name} server for {plan.name}") as server:
        progress(f"{plan.name}: starting the {plan.engine.name} server")
        startup = server.wait_ready(
            startup_timeout_s,
            warmup=warmup,
            on_wait=lambda s: progress(f"{plan.name}: waiting for the server ({s:.0f} s)"),
        )
        offset = 1
        for concurrency in plan.config.concurrency:
            n = plan.config.requests_at(concurrency)
            progress(f"{plan.name}: concurrency {concurrency}, {n} requests")
            levels.append(level(plan.prompts.requests[offset : offset + n], concurrency))
            offset += n
            server.check_alive()
        peak = server_peak_rss(server.pid)
        greedy = None
        if reference is not None:
            progress(f"{plan.name}: greedy check, {len(plan.check)} prompts with speculation")
            checked = speculative.greedy_ids(plan.engine, plan.launch, plan.options, plan.check, plan.config.new_tokens)
            greedy = speculative.compare(reference, checked)
        kv = plan.engine.kv_allocation(server.log_text())
    return ServedRun(description, startup, levels, peak, kv, greedy)


def describe_engine(plan: ServedPlan) -> RuntimeDescription:
    """The engine as the results name it; the kernel read by loading the artifact with the same library."""
    from quantlab.runtimes import select_runtime

    engine = plan.engine
    base = dict(
        runtime=f"{engine.name} server",
        runtime_version=engine.version(),
        device=plan.device,
        threads=plan.threads,
        batching=engine.batching_note,
    )
    if not engine.kernel_readable:
        return RuntimeDescription(
            **base,
            device_name=plan.device,
            compute_dtype="auto",
            kernel="unknown",
            kernel_detail=f"{engine.name} chooses its kernel at load time; quantlab does not read it back "
            "(engine not verified by quantlab)",
        )
    session = select_runtime(plan.artifact, engine.same_library_runtime).load(plan.artifact, device=plan.device)
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


def server_peak_rss(pid: int) -> int:
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
