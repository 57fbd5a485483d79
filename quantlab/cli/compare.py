"""`quantlab compare`: two or more results files side by side (reads results only, measures nothing)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from quantlab.cli.app import app
from quantlab.cli.console import console, emit, warning
from quantlab.errors import OptionError


@app.command()
def compare(
    results: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Two or more results JSONL files. The first (A) is the reference: every other run is paired "
            "with it and shown as a ratio to it.",
            show_default=False,
            metavar="RESULTS",
        ),
    ] = None,
    format: Annotated[str, typer.Option("--format", help="md | html (one self-contained page)")] = "md",
    out: Annotated[Path | None, typer.Option(help="Write here instead of printing.")] = None,
) -> None:
    """Put two or more runs side by side: each artifact of A paired with the same artifact of every other run
    (same file by digest, else the same recipe cell, else the same method, backend, scheme and source model;
    measured the same way), every figure with its spread and the ratio to A. A ◆ marks a difference beyond
    both runs' own spread (standard errors, min–max of repeats, request percentiles); a figure without a
    recorded spread says so and is never marked. Settings that differ between the runs (host, token stream,
    baseline, versions) are named beside each pair; rows without a partner are listed as unpaired."""
    from quantlab.report.compare import FORMATS
    from quantlab.report.compare import compare as build
    from quantlab.results import read_results
    from quantlab.util.files import write_atomic

    if format not in FORMATS:
        raise OptionError(f"--format must be one of {', '.join(FORMATS)}, not {format}")
    if len(results or []) < 2:
        raise OptionError(f"compare needs two or more results files, got {len(results or [])}")
    runs = [(str(path), read_results(path, warn=warning)) for path in results]
    text = FORMATS[format](build(runs))
    if out is None:
        emit(text)
        return
    write_atomic(out, text)
    console.print(f"[green]wrote[/green] {out}")
