"""`quantlab methods` and `quantlab rigs`: what this install can quantize with, and what it can price."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from quantlab.cli.app import app
from quantlab.cli.console import emit, out_console
from quantlab.errors import OptionError


@app.command()
def methods(
    format: Annotated[str, typer.Option("--format", help="table | json")] = "table",
) -> None:
    """Every method and backend, whether it can run on this machine and why not; which llama.cpp tools are built."""
    from quantlab.methods import all_backends

    if format not in ("table", "json"):
        raise OptionError(f"--format must be table or json, not {format}")
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
    from quantlab.cli.llamacpp import tools_rows

    tools = tools_rows()
    if format == "json":
        emit(json.dumps({"methods": rows, "llamacpp_tools": tools}, indent=2))
        return
    table = Table(title="quantlab methods")
    for column in ("method", "backend", "default", "usable here", "why not", "writes / loads in"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["method"],
            row["backend"] + (" (legacy)" if row["legacy"] else ""),
            "yes" if row["default"] else "",
            "[green]yes[/green]" if row["usable"] else "[red]no[/red]",
            row["why_not"],
            row["summary"],
        )
    out_console.print(table)
    built = Table(title="llama.cpp tools (built from the installed llama-cpp-python's tree)")
    for column in ("tool", "built", "commit", "backend", "where / why not"):
        built.add_column(column)
    for row in tools:
        mark = "[green]yes[/green]" if row["built"] else "[red]no[/red]"
        built.add_row(row["tool"], mark, row["commit"], row["backend"], row["path"] or row["why_not"])
    out_console.print(built)


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
