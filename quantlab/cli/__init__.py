"""The `quantlab` command line: one thin module per command (parse → call the library → render), so notebooks,
recipes and the CLI run the same code. Options that mirror a model (bench settings, method options) are derived
from it (`options`); what the terminal shows is decided in one place (`console`).

Failures the user can fix are `QuantlabError`s: `main` prints them as one line, exit code 1, no traceback unless
`--debug`.
"""

import sys

from quantlab.cli import (  # noqa: F401  (registers the commands)
    bench,
    compare,
    fit,
    llamacpp,
    methods,
    quantize,
    reference,
    report,
    run,
    serve,
    tune,
)
from quantlab.cli.app import app
from quantlab.cli.console import error, state
from quantlab.errors import QuantlabError, exception_line

__all__ = ["app", "main"]


def main() -> None:
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
        error(f"unexpected {exception_line(exc)} (run with --debug for the traceback)", unexpected=True)
        sys.exit(1)
