"""`quantlab report` and `quantlab recommend`: render and read results files (no measuring code is imported)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from quantlab.cli.app import app
from quantlab.cli.console import console, emit, warning
from quantlab.errors import OptionError


@app.command()
def report(
    results: Annotated[Path, typer.Argument(help="A results JSONL file written by 'quantlab bench' or 'run'.")],
    format: Annotated[str, typer.Option("--format", help="md | csv | html")] = "md",
    out: Annotated[Path | None, typer.Option(help="Write here instead of printing.")] = None,
    all_records: Annotated[
        bool, typer.Option("--all", help="Every record, not only the newest per artifact/runtime/rig/host/protocol.")
    ] = False,
) -> None:
    """Render the tradeoff table from a results file (the newest record per configuration); rows from more than
    one host say which host made them."""
    from quantlab import report as rendering
    from quantlab.results import read_results
    from quantlab.util.files import write_atomic

    if format not in rendering.FORMATS:
        raise OptionError(f"--format must be one of {', '.join(rendering.FORMATS)}, not {format}")
    records = rendering.select(read_results(results, warn=warning), latest_only=not all_records)
    text = rendering.FORMATS[format](records)
    if out is None:
        emit(text)
        return
    write_atomic(out, text)
    console.print(f"[green]wrote[/green] {out}")


@app.command()
def recommend(
    results: Annotated[
        list[Path],
        typer.Argument(
            help="Results JSONL file(s) (quality and speed records of the same artifacts; served records for "
            "--basis served)."
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
    from quantlab.report import select
    from quantlab.report.recommend import explain
    from quantlab.report.recommend import recommend as choose
    from quantlab.results import read_results

    records = select([r for path in results for r in read_results(path, warn=warning)])
    rec = choose(records, rig=rig, min_quality=min_quality, max_memory_gb=max_memory, basis=basis, at=at)
    emit(explain(rec, rig=rig, min_quality=min_quality, max_memory_gb=max_memory, at=at))
    if rec.winner is None:
        raise typer.Exit(1)
