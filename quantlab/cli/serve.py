"""`quantlab serve`: one artifact behind a real OpenAI-compatible server until Ctrl-C."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer

from quantlab.bench.config import BenchConfig
from quantlab.cli.app import app
from quantlab.cli.console import console, steps
from quantlab.cli.options import build, model_options
from quantlab.errors import BenchError

# the BenchConfig fields `serve` takes: how the engine is chosen, started and sized, and its levers
ENGINE_SETTINGS = ["engine", "vllm_python", "device", "tensor_parallel", "threads", "kv_cache_dtype", "prefix_cache"]
ENGINE_SETTINGS += ["draft", "draft_tokens"]


@app.command()
@model_options(
    BenchConfig,
    ENGINE_SETTINGS,
    into="settings",
    panel="Engine",
)
def serve(
    artifact: Annotated[Path, typer.Argument(help="An artifact directory made by 'quantlab quantize'.")],
    settings: dict,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (loopback only).")] = 8000,
    ctx: Annotated[int, typer.Option(help="Context length the server allows per request.")] = 2048,
    max_concurrency: Annotated[
        int,
        typer.Option(
            help="Concurrent requests the server is sized for: llama-server's slots (each with --ctx tokens), "
            "the CPU transformers engine's KV cache."
        ),
    ] = 32,
    startup_timeout: Annotated[float, typer.Option(help="Seconds to wait for the server to answer.")] = 600,
) -> None:
    """Serve ARTIFACT behind an OpenAI-compatible API (/v1/completions, /v1/chat/completions) on 127.0.0.1
    until Ctrl-C. quantlab starts the engine's server, waits until it answers a first request, and stops it
    (and anything it started) on Ctrl-C, SIGTERM or failure."""
    from quantlab.artifact import load_artifact
    from quantlab.bench.prepare import resolve_device
    from quantlab.bench.served_plan import engine_and_options
    from quantlab.serve.process import ServerProcess, check_port_free
    from quantlab.util.signals import exit_on_sigterm

    config = build(BenchConfig, settings, BenchError)
    exit_on_sigterm()
    loaded = load_artifact(artifact)
    device = resolve_device(config)
    chosen, options = engine_and_options(loaded, config, device)
    check_port_free(port)
    threads = config.threads or os.cpu_count() or 1
    plan = chosen.plan(
        loaded, port=port, device=device, threads=threads, ctx=ctx, max_concurrency=max_concurrency, options=options
    )

    def first_request() -> None:
        import httpx

        body = {"model": plan.model, "prompt": "Hello", "max_tokens": 2, **chosen.request_fields(2, options)}
        response = httpx.post(plan.base_url + "/v1/completions", json=body, timeout=startup_timeout)
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")

    with ServerProcess(plan, name=f"{chosen.name} server") as server:
        with steps(f"starting the {chosen.name} server") as step:
            seconds = server.wait_ready(
                startup_timeout,
                warmup=first_request,
                on_wait=lambda s: step(f"starting the {chosen.name} server ({s:.0f} s)"),
            )
        _announce_then_wait(server, chosen, options, seconds)


def _announce_then_wait(server, engine, options, seconds: float) -> None:
    """Say where the model is served, then wait for Ctrl-C (a normal stop) or the server's own exit (an error)."""
    from quantlab.errors import ServeError

    plan = server.plan
    # The try opens before the "serving" line is printed: whoever reads that line may press Ctrl-C at once,
    # while the line (or the note after it) is still being written, and CI saw that Ctrl-C escape as exit 130.
    try:
        console.print(
            f"[green]serving[/green] {plan.model} at {plan.base_url}/v1 with {engine.name} "
            f"{engine.version()} (ready in {seconds:.1f} s; batching: {engine.batching_note}; options: "
            f"{options.label()}). Ctrl-C stops it.",
            highlight=False,
            soft_wrap=True,
        )
        if not engine.verified:
            console.print(f"[yellow]note:[/yellow] engine {engine.name!r} has not been verified by quantlab.")
        # Watched with psutil, not Popen.poll(): a Ctrl-C landing inside poll() can leave Popen's internal
        # wait lock held, and stopping the server then waits on that lock forever (seen once in CI).
        while _running(server.proc.pid):
            time.sleep(0.5)
    except KeyboardInterrupt:
        console.print("stopping the server")
        return
    raise ServeError(f"the server exited with code {server.proc.wait()}; last log lines: {server.log_tail()}")


def _running(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
