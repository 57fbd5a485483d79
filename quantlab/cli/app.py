"""The typer application and its global `--debug` switch; each command module registers itself on `app`, and
`quantlab.cli.main` (the one place failures become one line) runs it."""

from __future__ import annotations

from typing import Annotated

import typer

from quantlab.cli.console import quiet_libraries, state

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Quantize LLMs to every format that matters, serve each artifact in a real runtime, and measure it "
    "the same way: quality (ppl, KLD), speed, memory and $/1M tokens, in one results schema.",
)


@app.callback()
def _root(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            help="Show library output and full tracebacks (otherwise libraries write to a "
            "log file under the quantlab cache).",
        ),
    ] = False,
) -> None:
    state["debug"] = debug
    if not debug:
        quiet_libraries()
