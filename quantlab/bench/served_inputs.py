"""What a served sweep needs besides the server: its prompts, the kernel label, the server's peak memory and the
memory-fit arithmetic. `bench.served` drives the sweep itself."""

from __future__ import annotations

import contextlib
import gc
from dataclasses import dataclass

import numpy as np

from quantlab.artifact import Artifact
from quantlab.bench.config import BenchConfig
from quantlab.bench.loadgen import Request
from quantlab.bench.prepare import tokenizer_dir
from quantlab.corpus import load_text, tokenize
from quantlab.errors import BenchError
from quantlab.results import RuntimeDescription
from quantlab.results.provenance import TextSource
from quantlab.runtimes import select_runtime
from quantlab.serve.engines import Engine


@dataclass
class Prompts:
    requests: list[Request]  # the warm-up request first, then each level's in order
    ids: np.ndarray
    source: TextSource


def cut_prompts(artifact: Artifact, config: BenchConfig) -> Prompts:
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


def describe_engine(artifact: Artifact, engine: Engine, device: str, threads: int) -> RuntimeDescription:
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


def memfit_for(artifact: Artifact, config: BenchConfig):
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
