"""The typer application, its global `--debug` switch, and the one place failures become one line.

Failures the user can fix are `QuantlabError`s: printed as one line, exit code 1, no traceback unless `--debug`.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from quantlab.cli.console import error, quiet_libraries, state
from quantlab.errors import QuantlabError

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


def main() -> None:
    import quantlab.cli  # noqa: F401  (registers every command on `app`)

    try:
        app()
    except KeyboardInterrupt:
        # Every server and temporary directory was released on the way out (context managers).
        error("interrupted")
        sys.exit(130)
    except QuantlabError as exc:
        if state["debug"]:
            raise
        error(str(exc))
        sys.exit(1)
    except Exception as exc:  # a bug or a library failure we did not anticipate: still one line
        if state["debug"]:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        error(f"unexpected {type(exc).__name__}: {first} (run with --debug for the traceback)", unexpected=True)
        sys.exit(1)
