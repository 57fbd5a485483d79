"""The `quantlab` command line. Every command is a thin layer over the library API (`quantlab.quantize`,
`quantlab.bench.bench`, `quantlab.report`), so notebooks and recipes run the same code.

Failures the user can fix are `QuantlabError`s: printed as one line, exit code 1, no traceback unless
`--debug`.
"""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager, redirect_stderr
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from quantlab.errors import QuantlabError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Quantize LLMs to every format that matters, serve each artifact in a real runtime, and measure it "
    "the same way: quality (ppl, KLD), speed, memory and $/1M tokens, in one results schema.",
)
# Bound to the real streams now: library output is silenced by redirecting sys.stderr (see `_library_output`),
# and quantlab's own progress and errors must not be silenced with it.
console = Console(file=sys.stderr)
# Wide enough for the methods/rigs tables when piped (rich would wrap them at 80 columns).
out_console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 200)
_state = {"debug": False}


def _quiet_libraries() -> None:
    """Library chatter (tqdm bars, loguru INFO) would bury quantlab's own progress; --debug keeps it."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("LLM_COMPRESSOR_LOG_LEVEL", "ERROR")  # not _DISABLED: GPTQ then fails to log METRIC
    import warnings

    warnings.filterwarnings("ignore")


@contextmanager
def _library_output():
    """Swallow what libraries print on stderr (tqdm bars with an explicit `disable=False`, log lines) while
    quantlab's progress shows; --debug lets it through."""
    if _state["debug"]:
        yield
        return
    with redirect_stderr(io.StringIO()):
        yield


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show library logs and full tracebacks.")] = False,
) -> None:
    _state["debug"] = debug
    if not debug:
        _quiet_libraries()


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True
    )


def _reporter(progress: Progress, task) -> Callable[[str], None]:
    """Progress for a long run: the live line on a terminal; elsewhere (CI logs, nohup) a timestamped line per
    step, because a transient progress bar writes nothing there and a long run would look hung."""

    def report(message: str) -> None:
        progress.update(task, description=message)
        if not console.is_terminal:
            console.print(f"{time.strftime('%H:%M:%S')} {message}", highlight=False, markup=False)

    return report


def _ints(text: str, option: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"{option} takes comma-separated integers, e.g. 1,8") from None
    if not values:
        raise typer.BadParameter(f"{option} is empty")
    return values


@app.command()
def quantize(
    model: Annotated[
        str,
        typer.Argument(
            help="A Hugging Face hub id, a local HF model directory, or 'default' (the embedded SmolLM2-135M-Instruct)."
        ),
    ],
    method: Annotated[str, typer.Option(help="Quantization method; see 'quantlab methods'.")],
    out: Annotated[Path, typer.Option(help="Artifact directory to create (must not exist unless --force).")],
    bits: Annotated[int | None, typer.Option(help="Weight bits (rtn: 4 or 8).")] = None,
    group_size: Annotated[int | None, typer.Option(help="Weights per scale; -1 = per output channel.")] = None,
    backend: Annotated[str | None, typer.Option(help="Backend library; default: the method's default.")] = None,
    dtype: Annotated[
        str,
        typer.Option(
            help="fp32|bf16|fp16|auto: dtype of the saved model (none) or of the "
            "tensors left unquantized; auto = the source dtype."
        ),
    ] = "auto",
    symmetric: Annotated[
        bool | None, typer.Option("--symmetric/--asymmetric", help="Integer grid with or without zero-point.")
    ] = None,
    act_order: Annotated[str | None, typer.Option(help="GPTQ column order: off | static | group (desc_act).")] = None,
    damp: Annotated[float | None, typer.Option(help="GPTQ Hessian dampening fraction (default 0.01).")] = None,
    n_grid: Annotated[int | None, typer.Option(help="AWQ scale-search grid points per layer (default 20).")] = None,
    scheme: Annotated[
        str | None,
        typer.Option(
            help="gguf: the llama.cpp file type, e.g. Q8_0, Q6_K, Q5_K_M, "
            "Q4_K_M (default), Q4_0, Q3_K_M, Q2_K, IQ4_XS, IQ3_M, IQ2_M, "
            "F16. fp8: FP8_DYNAMIC (default, W8A8), FP8_BLOCK, FP8_W8A16 "
            "(weight-only). fp4: NVFP4 (default, W4A4), NVFP4A16, MXFP4, "
            "MXFP4A16. bnb: nf4 (default), fp4, int8."
        ),
    ] = None,
    imatrix: Annotated[
        bool | None,
        typer.Option(
            "--imatrix/--no-imatrix",
            help="gguf: weigh rounding with an "
            "importance matrix from the calibration data (on by default "
            "when calibration options are given; IQ types need it).",
        ),
    ] = None,
    double_quant: Annotated[
        bool | None,
        typer.Option(
            "--double-quant/--no-double-quant", help="bnb nf4/fp4: quantize the block scales too (QLoRA; default off)."
        ),
    ] = None,
    compute_dtype: Annotated[
        str | None,
        typer.Option(
            help="bnb nf4/fp4: fp32|bf16|fp16, the dtype 4-bit "
            "weights are expanded to for the matmul (default: "
            "--dtype)."
        ),
    ] = None,
    calib_dataset: Annotated[
        str | None,
        typer.Option(
            help="Calibration text: 'default', 'embedded', 'wikitext2' (validation splits) or a .txt/.jsonl path."
        ),
    ] = None,
    calib_samples: Annotated[int | None, typer.Option(help="Calibration samples (default 64).")] = None,
    calib_seq_len: Annotated[int | None, typer.Option(help="Tokens per calibration sample (default 512).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed that picks the calibration samples (default 0).")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing --out (atomically).")] = False,
    trust_remote_code: Annotated[bool, typer.Option(help="Allow the model's own Python code to run.")] = False,
) -> None:
    """Quantize MODEL into an artifact directory: engine-native files plus the quantlab.json manifest.

    The artifact is built under a hidden temporary name and renamed into place at the end: if anything
    fails (or the process is killed), nothing appears at --out.
    """
    from pydantic import ValidationError

    from quantlab.errors import SpecError, describe_validation_error
    from quantlab.quantizer import quantize as run_quantize
    from quantlab.spec import Calibration, MethodSpec

    calib = {
        k: v
        for k, v in {
            "dataset": calib_dataset,
            "n_samples": calib_samples,
            "seq_len": calib_seq_len,
            "seed": seed,
        }.items()
        if v is not None
    }
    try:
        spec = MethodSpec(
            method=method,
            backend=backend,
            bits=bits,
            group_size=group_size,
            dtype=dtype,
            symmetric=symmetric,
            act_order=act_order,
            damp=damp,
            n_grid=n_grid,
            scheme=scheme,
            imatrix=imatrix,
            double_quant=double_quant,
            compute_dtype=compute_dtype,
            calibration=Calibration(**calib) if calib else None,
        )
    except ValidationError as exc:
        raise SpecError(f"invalid option {describe_validation_error(exc)}") from exc
    with _progress() as progress, _library_output():
        task = progress.add_task(f"quantizing {model} with {method}", total=None)
        artifact = run_quantize(
            model,
            spec,
            out,
            force=force,
            trust_remote_code=trust_remote_code,
            log=lambda msg: progress.update(task, description=msg),
        )
    m = artifact.manifest
    console.print(
        f"[green]wrote[/green] {artifact.path}  {m.spec.method}/{m.spec.backend} {m.spec.label()}  "
        f"{m.format}  {artifact.disk_bytes / 1e6:.1f} MB  in {m.quantize_seconds:.1f} s"
    )


@app.command()
def bench(
    artifacts: Annotated[list[Path], typer.Argument(help="Artifact directories made by 'quantlab quantize'.")],
    baseline: Annotated[
        Path | None,
        typer.Option(
            help="Artifact to compare against (KLD, top-1, Δppl), usually the 'none' artifact of the same model."
        ),
    ] = None,
    dataset: Annotated[
        str,
        typer.Option(
            help="'default' (hub wikitext-2-raw if reachable, else the embedded "
            "WikiText-2), 'wikitext2', 'embedded', or a .txt/.jsonl path. "
            "With --load: where the prompts are cut from."
        ),
    ] = "default",
    ctx: Annotated[int | None, typer.Option(help="Perplexity window length in tokens. Default 512.")] = None,
    max_tokens: Annotated[
        int | None, typer.Option(help="Cut the token stream to this many tokens. Default 4096.")
    ] = None,
    batch_sizes: Annotated[
        str | None, typer.Option(help="Comma-separated batch sizes for the speed runs. Default 1,8.")
    ] = None,
    prompt_tokens: Annotated[
        int, typer.Option(help="Prompt length of the speed runs (and of each --load request).")
    ] = 128,
    new_tokens: Annotated[
        int, typer.Option(help="Tokens generated per sequence (per --load request: forced, EOS suppressed).")
    ] = 32,
    warmup: Annotated[int | None, typer.Option(help="Untimed runs before the timed ones. Default 1.")] = None,
    repeats: Annotated[int | None, typer.Option(help="Timed runs; the table shows their median. Default 3.")] = None,
    rig: Annotated[
        str | None,
        typer.Option(
            help="Rig the measurement runs on (prices the $/1M column); "
            "default 'cpu' on a CPU host. See 'quantlab rigs'."
        ),
    ] = None,
    price_per_hour: Annotated[float | None, typer.Option(help="Override the rig's $/hour.")] = None,
    rigs_file: Annotated[Path | None, typer.Option(help="YAML file adding or overriding rigs.")] = None,
    results: Annotated[Path, typer.Option(help="JSONL file the results are appended to.")] = Path(
        "results/bench.jsonl"
    ),
    runtime: Annotated[
        str | None, typer.Option(help="Runtime to serve the artifacts; default: the one that loads the format.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu or cuda:N; default cuda:0 if present.")] = None,
    dtype: Annotated[
        str | None, typer.Option(help="Compute dtype: auto (the artifact's) | fp32 | bf16 | fp16 Default auto.")
    ] = None,
    quality: Annotated[bool | None, typer.Option("--quality/--no-quality", help="Measure perplexity/KLD.")] = None,
    speed: Annotated[bool | None, typer.Option("--speed/--no-speed", help="Measure speed and memory.")] = None,
    tasks: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated lm-eval tasks scored on each artifact (and "
            "the baseline, for recovery), e.g. quantlab_wikitext_nextword "
            "(shipped, offline) or arc_easy,hellaswag (hub datasets)."
        ),
    ] = None,
    task_path: Annotated[Path | None, typer.Option(help="Folder of lm-eval task YAMLs (local datasets).")] = None,
    task_limit: Annotated[int | None, typer.Option(help="Score only the first N documents per task.")] = None,
    num_fewshot: Annotated[int | None, typer.Option(help="Few-shot examples per task prompt.")] = None,
    load: Annotated[
        bool,
        typer.Option(
            "--load",
            help="Serve each artifact through a real engine (see "
            "'quantlab serve') and drive it with concurrent streaming "
            "requests: TTFT, TPOT, ITL, tok/s, $/1M per level.",
        ),
    ] = False,
    concurrency: Annotated[str, typer.Option(help="--load: comma-separated concurrency levels.")] = "1,8,32",
    requests: Annotated[
        int | None, typer.Option(help="--load: requests per level. Default 2 × concurrency, at least 8.")
    ] = None,
    request_rate: Annotated[
        float | None,
        typer.Option(
            help="--load: Poisson arrivals at this many requests/s (capped by the concurrency); default: all at once."
        ),
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option(
            help="--load: llamacpp | transformers | vllm; default: the first installed one that serves the format."
        ),
    ] = None,
    threads: Annotated[int | None, typer.Option(help="--load: CPU threads of the server. Default: all cores.")] = None,
) -> None:
    """Measure artifacts: perplexity (and KLD/top-1 vs --baseline), prefill/decode tok/s per batch size,
    peak memory, and $/1M tokens on the rig. Appends one JSON record per artifact to --results and prints
    the table. With --load: the served engine under concurrent load instead (the batching table)."""
    from quantlab.bench.run import BenchOptions
    from quantlab.bench.run import bench as run_bench
    from quantlab.report import tables

    in_process = {
        "--baseline": baseline,
        "--ctx": ctx,
        "--max-tokens": max_tokens,
        "--batch-sizes": batch_sizes,
        "--warmup": warmup,
        "--repeats": repeats,
        "--runtime": runtime,
        "--dtype": dtype,
        "--quality/--no-quality": quality,
        "--speed/--no-speed": speed,
        "--tasks": tasks,
        "--task-path": task_path,
        "--task-limit": task_limit,
        "--num-fewshot": num_fewshot,
    }
    if load:
        given = [name for name, value in in_process.items() if value is not None]
        if given:
            raise typer.BadParameter(f"{', '.join(given)} measure(s) in-process runs, not --load")
        _bench_load(
            artifacts,
            dataset=dataset,
            prompt_tokens=prompt_tokens,
            new_tokens=new_tokens,
            rig=rig,
            price_per_hour=price_per_hour,
            rigs_file=rigs_file,
            results=results,
            device=device,
            concurrency=concurrency,
            requests=requests,
            request_rate=request_rate,
            engine=engine,
            threads=threads,
        )
        return
    load_only = {"--requests": requests, "--request-rate": request_rate, "--engine": engine, "--threads": threads}
    given = [name for name, value in load_only.items() if value is not None]
    if given:
        raise typer.BadParameter(f"{', '.join(given)} only apply with --load")
    dtype = dtype or "auto"
    if dtype not in ("auto", "fp32", "bf16", "fp16"):
        raise typer.BadParameter(f"--dtype must be auto, fp32, bf16 or fp16, not {dtype}")
    options = BenchOptions(
        dataset=dataset,
        ctx=ctx or 512,
        max_tokens=max_tokens or 4096,
        batch_sizes=_ints(batch_sizes or "1,8", "--batch-sizes"),
        prompt_tokens=prompt_tokens,
        new_tokens=new_tokens,
        warmup=1 if warmup is None else warmup,
        repeats=3 if repeats is None else repeats,
        rig=rig,
        rigs_file=str(rigs_file) if rigs_file else None,
        price_per_hour=price_per_hour,
        runtime=runtime,
        device=device,
        dtype=dtype,
        quality=quality is not False,
        speed=speed is not False,
        tasks=[t.strip() for t in tasks.split(",") if t.strip()] if tasks else None,
        task_path=str(task_path) if task_path else None,
        task_limit=task_limit,
        num_fewshot=num_fewshot,
    )
    with _progress() as progress, _library_output():
        task = progress.add_task("benching", total=None)
        records = run_bench(
            artifacts,
            baseline=baseline,
            options=options,
            results_path=results,
            progress=lambda msg: progress.update(task, description=msg),
        )
    _emit(tables.markdown(records, title="quantlab bench"))
    console.print(f"[green]appended[/green] {len(records)} record(s) to {results}")


def _bench_load(
    artifacts: list[Path],
    *,
    dataset: str,
    prompt_tokens: int,
    new_tokens: int,
    rig: str | None,
    price_per_hour: float | None,
    rigs_file: Path | None,
    results: Path,
    device: str | None,
    concurrency: str,
    requests: int | None,
    request_rate: float | None,
    engine: str | None,
    threads: int | None,
) -> None:
    from quantlab.bench.served import LoadOptions, bench_load
    from quantlab.report import tables
    from quantlab.serve.process import exit_on_sigterm

    options = LoadOptions(
        concurrency=_ints(concurrency, "--concurrency"),
        requests=requests,
        prompt_tokens=prompt_tokens,
        output_tokens=new_tokens,
        request_rate=request_rate,
        dataset=dataset,
        engine=engine,
        device=device,
        threads=threads,
        rig=rig,
        rigs_file=str(rigs_file) if rigs_file else None,
        price_per_hour=price_per_hour,
    )
    options.check()
    exit_on_sigterm()
    records = []
    with _progress() as progress, _library_output():
        task = progress.add_task("serving", total=None)
        for artifact in artifacts:
            records.append(
                bench_load(
                    artifact,
                    options=options,
                    results_path=results,
                    progress=lambda msg: progress.update(task, description=msg),
                )
            )
    _emit(tables.markdown(records, title="quantlab bench --load"))
    console.print(f"[green]appended[/green] {len(records)} record(s) to {results}")


@app.command()
def serve(
    artifact: Annotated[Path, typer.Argument(help="An artifact directory made by 'quantlab quantize'.")],
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (loopback only).")] = 8000,
    engine: Annotated[
        str | None,
        typer.Option(
            help="llamacpp (GGUF) | transformers (HF formats, continuous "
            "batching) | vllm (CUDA rigs; not verified by quantlab); "
            "default: the first installed one that serves the format."
        ),
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu or cuda:N; default cuda:0 if present.")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads. Default: all cores.")] = None,
    ctx: Annotated[int, typer.Option(help="Context length the server allows per request.")] = 2048,
    max_concurrency: Annotated[
        int, typer.Option(help="Concurrent requests the KV cache is sized for (CPU transformers engine).")
    ] = 32,
    startup_timeout: Annotated[float, typer.Option(help="Seconds to wait for the server to answer.")] = 600,
) -> None:
    """Serve ARTIFACT behind an OpenAI-compatible API (/v1/completions, /v1/chat/completions) on 127.0.0.1
    until Ctrl-C. quantlab starts the engine's server, waits until it answers a first request, and stops it
    (and anything it started) on Ctrl-C, SIGTERM or failure."""
    import time

    from quantlab.artifact import load_artifact
    from quantlab.runtimes import default_device
    from quantlab.serve.engines import select_engine
    from quantlab.serve.process import ServerProcess, check_port_free, exit_on_sigterm

    exit_on_sigterm()
    loaded = load_artifact(artifact)
    device = device or default_device()
    chosen = select_engine(loaded, engine, device=device)
    check_port_free(port)
    plan = chosen.plan(
        loaded,
        port=port,
        device=device,
        threads=threads or os.cpu_count() or 1,
        ctx=ctx,
        max_concurrency=max_concurrency,
    )

    def first_request() -> None:
        import httpx

        body = {"model": plan.model, "prompt": "Hello", "max_tokens": 2, **chosen.fixed_length(2)}
        response = httpx.post(plan.base_url + "/v1/completions", json=body, timeout=startup_timeout)
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")

    with ServerProcess(plan, name=f"{chosen.name} server") as server:
        with _progress() as progress:
            task = progress.add_task(f"starting the {chosen.name} server", total=None)
            seconds = server.wait_ready(
                startup_timeout,
                warmup=first_request,
                on_wait=lambda s: progress.update(task, description=f"starting the {chosen.name} server ({s:.0f} s)"),
            )
        console.print(
            f"[green]serving[/green] {plan.model} at {plan.base_url}/v1 with {chosen.name} "
            f"{chosen.version()} (ready in {seconds:.1f} s; batching: {chosen.batching}). "
            f"Ctrl-C stops it.",
            highlight=False,
            soft_wrap=True,
        )
        if not chosen.verified:
            console.print(f"[yellow]note:[/yellow] engine {chosen.name!r} has not been verified by quantlab.")
        try:
            while server.proc.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            console.print("stopping the server")
            return
        from quantlab.errors import ServeError

        raise ServeError(f"the server exited with code {server.proc.returncode}; last log lines: {server.log_tail()}")


@app.command()
def report(
    results: Annotated[Path, typer.Argument(help="A results JSONL file written by 'quantlab bench'.")],
    format: Annotated[str, typer.Option("--format", help="md | csv | html")] = "md",
    out: Annotated[Path | None, typer.Option(help="Write here instead of printing.")] = None,
    all_records: Annotated[
        bool, typer.Option("--all", help="Every record, not only the newest per artifact/runtime/rig/protocol.")
    ] = False,
) -> None:
    """Render the tradeoff table from a results file (the newest record per configuration)."""
    from quantlab.report import tables
    from quantlab.results import read_results

    if format not in tables.FORMATS:
        raise typer.BadParameter(f"--format must be one of {', '.join(tables.FORMATS)}, not {format}")
    records = tables.select(read_results(results), latest_only=not all_records)
    text = tables.FORMATS[format](records)
    if out is None:
        _emit(text)
        return
    _write_atomic(out, text)
    console.print(f"[green]wrote[/green] {out}")


def _emit(text: str) -> None:
    """Tables go to stdout verbatim: a rich console would re-wrap Markdown rows at the terminal width."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


@app.command()
def recommend(
    results: Annotated[
        list[Path],
        typer.Argument(
            help="Results JSONL file(s) (quality and speed records of the "
            "same artifacts; served records for --basis served)."
        ),
    ],
    rig: Annotated[str, typer.Option(help="The rig the formats were measured on, e.g. cpu or h100.")],
    min_quality: Annotated[
        float, typer.Option(help="Least quality, % of the baseline (perplexity recovery: 100 × baseline ppl / ppl).")
    ] = 0.0,
    max_memory: Annotated[float | None, typer.Option(help="Most memory in GB (the measured peak).")] = None,
    basis: Annotated[
        str, typer.Option(help="decode (in-process decode tok/s) | served (served output tok/s).")
    ] = "decode",
    at: Annotated[int, typer.Option(help="Batch size (decode) or concurrency (served) the price is read at.")] = 1,
) -> None:
    """The cheapest format per 1M tokens on --rig that meets --min-quality and --max-memory, with the reason,
    the runner-up, and what was excluded and why."""
    from quantlab.report import tables
    from quantlab.report.recommend import explain
    from quantlab.report.recommend import recommend as choose
    from quantlab.results import read_results

    records = tables.select([r for path in results for r in read_results(path)])
    rec = choose(records, rig=rig, min_quality=min_quality, max_memory_gb=max_memory, basis=basis, at=at)
    _emit(explain(rec, rig=rig, min_quality=min_quality, max_memory_gb=max_memory, at=at))
    if rec.winner is None:
        raise typer.Exit(1)


@app.command()
def methods(
    format: Annotated[str, typer.Option("--format", help="table | json")] = "table",
) -> None:
    """Every method and backend, whether it can run on this machine, and why not."""
    import json

    from quantlab.methods import all_backends

    if format == "json":
        rows = []
        for backend in all_backends():
            availability = backend.availability()
            rows.append(
                {
                    "method": backend.method,
                    "backend": backend.name,
                    "default": backend.default,
                    "legacy": backend.legacy,
                    "usable": availability.usable,
                    "why_not": availability.reason,
                    "summary": backend.summary,
                }
            )
        _emit(json.dumps(rows, indent=2))
        return
    if format != "table":
        raise typer.BadParameter(f"--format must be table or json, not {format}")
    table = Table(title="quantlab methods")
    for column in ("method", "backend", "default", "usable here", "why not", "writes / loads in"):
        table.add_column(column)
    for backend in all_backends():
        availability = backend.availability()
        table.add_row(
            backend.method,
            backend.name + (" (legacy)" if backend.legacy else ""),
            "yes" if backend.default else "",
            "[green]yes[/green]" if availability.usable else "[red]no[/red]",
            availability.reason,
            backend.summary,
        )
    out_console.print(table)


@app.command()
def rigs(
    rigs_file: Annotated[Path | None, typer.Option(help="YAML file adding or overriding rigs.")] = None,
) -> None:
    """The rigs a result can be labelled with, their prices per hour and where the prices come from."""
    from quantlab.rigs import COST_FORMULA, load_rigs

    table = Table(title="quantlab rigs", caption=COST_FORMULA)
    for column in ("rig", "hardware", "device", "$/hour", "memory GB", "bandwidth GB/s", "price source"):
        table.add_column(column)
    for rig in load_rigs(rigs_file).values():
        table.add_row(
            rig.name,
            rig.description,
            rig.device,
            f"{rig.price_per_hour:.4g}",
            "host" if rig.memory_gb is None else f"{rig.memory_gb:g}",
            "–" if rig.bandwidth_gb_s is None else f"{rig.bandwidth_gb_s:g}",
            rig.price_note,
        )
    out_console.print(table)


@app.command()
def fit(
    model: Annotated[
        str,
        typer.Argument(
            help="A local HF model directory, an artifact directory (its measured weight bytes are used), or 'default'."
        ),
    ],
    rig: Annotated[
        list[str] | None, typer.Option(help="Rig(s) to check; repeat the option. Default: every GPU rig.")
    ] = None,
    weight_bits: Annotated[
        float,
        typer.Option(
            help="Bits per quantized linear weight, scales included (16; "
            "8.0x for FP8/int8; e.g. 4.125 for int4 with one fp16 scale "
            "per 128). Ignored for an artifact."
        ),
    ] = 16.0,
    batch: Annotated[int, typer.Option(help="Concurrent sequences.")] = 1,
    ctx: Annotated[int, typer.Option(help="Tokens per sequence (prompt + output).")] = 4096,
    kv_dtype: Annotated[str, typer.Option(help="KV cache dtype: bf16 | fp16 | fp8 | fp32.")] = "bf16",
    utilization: Annotated[float, typer.Option(help="Share of the rig's memory the model may use.")] = 0.9,
    rigs_file: Annotated[Path | None, typer.Option(help="YAML file adding or overriding rigs.")] = None,
) -> None:
    """Does MODEL fit on each rig at --batch × --ctx? Weights + KV cache (arithmetic from the config) against
    the rig's memory × --utilization; the rest is left for activations and the engine's buffers."""
    from quantlab import memfit
    from quantlab.artifact import MANIFEST, load_artifact
    from quantlab.errors import SpecError
    from quantlab.models import resolve_model
    from quantlab.rigs import load_rigs

    if kv_dtype not in memfit.KV_DTYPE_BYTES:
        raise SpecError(f"--kv-dtype must be one of {', '.join(memfit.KV_DTYPE_BYTES)}, not {kv_dtype!r}")
    if batch < 1 or ctx < 1 or not 0 < utilization <= 1 or weight_bits <= 0:
        raise SpecError("--batch and --ctx must be ≥ 1, --weight-bits > 0, and 0 < --utilization ≤ 1")
    rigs = load_rigs(rigs_file)
    unknown = [name for name in rig or [] if name not in rigs]
    if unknown:
        raise SpecError(f"unknown rig {unknown[0]!r}; see 'quantlab rigs'")
    chosen = [rigs[name] for name in rig] if rig else [r for r in rigs.values() if r.device == "cuda"]
    measured = None
    path = Path(model)
    with _library_output():
        if (path / MANIFEST).is_file():
            artifact = load_artifact(path)
            measured = artifact.manifest.weight_bytes
            arch = memfit.architecture_of_artifact(artifact)
        else:
            arch = memfit.architecture_of(path if path.is_dir() else Path(resolve_model(model).path))
    table = Table(
        title=f"memory fit: {model}, batch {batch} × ctx {ctx}, KV {kv_dtype}",
        caption="needed = weights + KV cache; usable = rig memory × utilization",
    )
    for column in ("rig", "verdict", "weights GB", "KV GB", "needed GB", "usable GB"):
        table.add_column(column)
    for r in chosen:
        f = memfit.footprint(
            arch,
            weight_bits=weight_bits,
            kv_dtype=kv_dtype,
            batch=batch,
            ctx=ctx,
            rig=r,
            utilization=utilization,
            measured_weight_bytes=measured,
        )
        table.add_row(
            r.name,
            "fits" if f.fits else "[red]does not fit[/red]",
            f"{f.weight_bytes / 1e9:.1f}",
            f"{f.kv_bytes / 1e9:.2f}",
            f"{f.needed_bytes / 1e9:.1f}",
            f"{f.capacity_bytes / 1e9:.1f}",
        )
    out_console.print(table)
    source = (
        "measured artifact weight bytes"
        if measured is not None
        else f"{weight_bits:g} bits per linear weight, other parameters 16-bit"
    )
    out_console.print(
        f"{arch.n_params / 1e9:.2f}B parameters, {arch.n_layers} layers × {arch.n_kv_heads} KV heads "
        f"× head dim {arch.head_dim}: {memfit.kv_bytes_per_token(arch, kv_dtype):,} KV bytes per "
        f"token; weights from {source}."
    )


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(help="A recipe YAML (see recipes/).")],
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Validate the recipe and print the plan: every cell, "
            "its nominal bits per weight, and the memory-fit "
            "verdict on each rig. Loads no weights.",
        ),
    ] = False,
    results: Annotated[
        Path | None,
        typer.Option(
            help="Results file. Default: results/<recipe name>.jsonl; the report is written next to it (.md, .html)."
        ),
    ] = None,
    work_dir: Annotated[
        Path | None, typer.Option(help="Where the artifacts go. Default: ~/.cache/quantlab/runs/<recipe name>.")
    ] = None,
) -> None:
    """Execute a recipe (model(s) × methods × bench settings × rigs): quantize every cell (reusing finished
    artifacts), bench each, append the results, render the report. Kill it anywhere and run it again: it
    continues where it stopped. --dry-run validates it and prints the plan instead."""
    from quantlab import recipes

    plan = recipes.load_recipe(recipe)
    if not dry_run:
        from quantlab.runner import run_recipe
        from quantlab.serve.process import exit_on_sigterm

        exit_on_sigterm()
        with _progress() as progress, _library_output():
            task = progress.add_task(f"running {plan.name}", total=None)
            path = run_recipe(recipe, results=results, work_dir=work_dir, progress=_reporter(progress, task))
        _emit(path.with_suffix(".md").read_text(encoding="utf-8"))
        console.print(
            f"[green]results[/green] {path}  [green]report[/green] {path.with_suffix('.md')}, "
            f"{path.with_suffix('.html')}"
        )
        return
    with _library_output():
        models = recipes.fit_plan(plan, recipe)
    rigs = plan.rig_entries()
    fit = plan.fit
    for model, arch, rows in models:
        table = Table(
            title=f"{plan.name}: {model.id} ({arch.n_params / 1e9:.2f}B parameters), memory fit at "
            f"batch {fit.batch} × ctx {fit.ctx}, KV {fit.kv_dtype}",
            caption=f"needed = weights (nominal bits per weight) + KV cache; usable = rig memory × "
            f"{fit.utilization:.0%}",
        )
        for column in ("cell", "method", "bits/weight", "weights GB", *(f"{r.name}" for r in rigs)):
            table.add_column(column)
        for row in rows:
            verdicts = [
                f"fits ({f.needed_bytes / 1e9:.1f} / {f.capacity_bytes / 1e9:.1f} GB)"
                if f.fits
                else f"[red]does NOT fit[/red] ({f.needed_bytes / 1e9:.1f} / {f.capacity_bytes / 1e9:.1f} GB)"
                for f in row.footprints
            ]
            spec = row.cell.spec
            table.add_row(
                row.cell.name + (" (baseline)" if row.cell.is_baseline else ""),
                f"{spec.method}/{spec.backend} {spec.label()}",
                f"{row.bits:.3g}",
                f"{row.footprints[0].weight_bytes / 1e9:.1f}",
                *verdicts,
            )
        out_console.print(table)
        notes = sorted({f"{r.cell.spec.method} {r.cell.spec.label()}: {r.bits_note}" for r in rows})
        out_console.print("bits per weight:\n" + "\n".join(f"  {n}" for n in notes), highlight=False)
    b = plan.bench
    would = [
        f"quantize {len(rows)} cell(s) per model ({len(models)} model(s)), each cached by a hash of model + "
        "spec (calibration included)",
        f"bench in-process: {b.dataset}, ctx {b.ctx}, {b.max_tokens} tokens, batch sizes {b.batch_sizes}, "
        f"prompts {b.prompt_tokens} + {b.new_tokens} new tokens" + (f", tasks {', '.join(b.tasks)}" if b.tasks else ""),
    ]
    if b.concurrency:
        would.append(
            f"bench served: concurrency {b.concurrency}, "
            + (f"cells {', '.join(b.load_cells)}" if b.load_cells is not None else "every cell")
        )
    would.append(
        "on rig(s) " + ", ".join(r.name + (f" at ${r.price_per_hour}/h" if r.price_per_hour else "") for r in rigs)
    )
    out_console.print("would run:\n" + "\n".join(f"  - {w}" for w in would), highlight=False)


@app.command()
def demo(
    results: Annotated[Path, typer.Option(help="JSONL file the demo's results are appended to.")] = Path(
        "results/demo.jsonl"
    ),
    report_path: Annotated[Path, typer.Option("--report", help="Markdown report written from --results.")] = Path(
        "results/demo.md"
    ),
    work_dir: Annotated[
        Path | None, typer.Option(help="Where the demo artifacts live; default: the quantlab cache.")
    ] = None,
    dataset: Annotated[str, typer.Option(help="Evaluation text (see 'quantlab bench --help').")] = "default",
    max_tokens: Annotated[int, typer.Option(help="Tokens of the evaluation stream.")] = 4096,
    ctx: Annotated[int, typer.Option(help="Perplexity window length.")] = 512,
    batch_sizes: Annotated[str, typer.Option(help="Batch sizes of the speed runs.")] = "1,8",
    repeats: Annotated[int, typer.Option(help="Timed runs per batch size.")] = 3,
    rig: Annotated[
        str | None,
        typer.Option(help="Rig label; default 'cpu' on a CPU host, required on a GPU host (see 'quantlab rigs')."),
    ] = None,
    fresh: Annotated[bool, typer.Option(help="Re-quantize even if the demo artifacts exist.")] = False,
) -> None:
    """The whole pipeline on the embedded default model (SmolLM2-135M-Instruct), offline: quantize it as
    `none` fp32 and bf16, `rtn` w4/w8 g64, GGUF Q4_K_M, FP8_DYNAMIC and bitsandbytes NF4, bench all against
    the fp32 baseline, write and print the table."""
    from quantlab.demo import run_demo

    with _progress() as progress, _library_output():
        task = progress.add_task("demo", total=None)
        text = run_demo(
            results=results,
            report_path=report_path,
            work_dir=work_dir,
            dataset=dataset,
            max_tokens=max_tokens,
            ctx=ctx,
            batch_sizes=_ints(batch_sizes, "--batch-sizes"),
            repeats=repeats,
            rig=rig,
            fresh=fresh,
            log=lambda msg: progress.update(task, description=msg),
        )
    _emit(text)
    console.print(f"[green]results[/green] {results}  [green]report[/green] {report_path}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        # Every server and temporary directory was released on the way out (context managers).
        console.print("[red]interrupted[/red]")
        sys.exit(130)
    except QuantlabError as exc:
        if _state["debug"]:
            raise
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except Exception as exc:  # a bug or a library failure we did not anticipate: still one line
        if _state["debug"]:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        console.print(
            f"[red]error:[/red] unexpected {type(exc).__name__}: {first} (run with --debug for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
