"""`quantlab bench`: every option is a BenchConfig field (`bench_options`); this module only picks the mode."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from quantlab.bench.config import BenchConfig, applies
from quantlab.cli.app import app
from quantlab.cli.console import console, emit, steps
from quantlab.cli.options import build, flag, model_options
from quantlab.errors import BenchError, OptionError

PANEL = "Bench settings"


def bench_options(into: str = "settings", exclude: tuple[str, ...] = ()) -> Callable:
    """Every bench setting as an option (less `exclude`); shared by `bench`, `run` and `demo`."""
    names = [name for name in BenchConfig.model_fields if name not in exclude]
    return model_options(BenchConfig, names, into=into, panel=PANEL)


def _refuse_other_mode(settings: dict, load: bool) -> None:
    """A setting of the mode that is not running is refused, never silently ignored."""
    other = "in-process" if load else "served"
    wrong = [flag(name) for name in settings if applies(name) == other]
    if wrong:
        raise OptionError(
            f"{', '.join(wrong)} measure(s) in-process runs, not --load"
            if load
            else f"{', '.join(wrong)} only apply with --load"
        )


@app.command()
@bench_options()
def bench(
    settings: dict,
    artifacts: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Artifact directories made by 'quantlab quantize' (with --target: at most one, the artifact you say "
            "the server serves; recorded as named by you, not verified).",
            show_default=False,
        ),
    ] = None,
    baseline: Annotated[
        Path | None,
        typer.Option(
            help="Compare against it (KLD, top-1, Δppl): an artifact, usually the 'none' one of the same model "
            "(its reference file is made once, in the quantlab cache, and the baseline unloaded before any "
            "artifact loads), or such a reference file itself (see 'quantlab reference')."
        ),
    ] = None,
    results: Annotated[Path, typer.Option(help="JSONL file the results are appended to.")] = Path(
        "results/bench.jsonl"
    ),
    load: Annotated[
        bool,
        typer.Option(
            "--load",
            help="Serve each artifact through a real engine (see 'quantlab serve') and drive it "
            "with concurrent streaming requests: TTFT, TPOT, ITL, tok/s, $/1M per level.",
        ),
    ] = False,
    target: Annotated[
        str | None,
        typer.Option(
            help="With --load: measure a server that is already running at this base URL (any OpenAI-compatible "
            "endpoint) instead of serving artifacts; the record says 'external' and carries no quality.",
        ),
    ] = None,
) -> None:
    """Measure artifacts: perplexity (and KLD/top-1 vs --baseline), prefill/decode tok/s per batch size,
    peak memory, and $/1M tokens on the rig. Appends one JSON record per artifact to --results and prints
    the table. With --load: the served engine under concurrent load instead (the batching table)."""
    from quantlab import report

    _refuse_other_mode(settings, load)
    if load and baseline is not None:
        raise OptionError("--baseline measures in-process runs, not --load")
    if target is not None and not load:
        raise OptionError("--target measures a running server under load: add --load")
    if target is None and not artifacts:
        raise OptionError("name at least one artifact (or measure a running server: --load --target URL)")
    if target is not None and len(artifacts or []) > 1:
        raise OptionError("--target measures one server: name at most one artifact (the one it serves)")
    config = build(BenchConfig, settings, BenchError)
    if target is not None:
        records = [_bench_target(target, artifacts, config, results)]
        title = "quantlab bench --load --target"
    elif load:
        from quantlab.bench.served import bench_load
        from quantlab.util.signals import exit_on_sigterm

        exit_on_sigterm()
        with steps("serving") as step:
            records = [bench_load(a, config=config, results_path=results, progress=step) for a in artifacts]
        title = "quantlab bench --load"
    else:
        from quantlab.bench.run import bench as run_bench

        with steps("benching") as step:
            records = run_bench(artifacts, baseline=baseline, config=config, results_path=results, progress=step)
        title = "quantlab bench"
    emit(report.markdown(records, title=title))
    console.print(f"[green]appended[/green] {len(records)} record(s) to {results}")


def _bench_target(target: str, artifacts: list[Path] | None, config: BenchConfig, results: Path):
    from quantlab.bench.target import bench_target
    from quantlab.util.signals import exit_on_sigterm

    exit_on_sigterm()
    with steps("measuring") as step:
        named = artifacts[0] if artifacts else None
        return bench_target(target, config=config, artifact=named, results_path=results, progress=step)
