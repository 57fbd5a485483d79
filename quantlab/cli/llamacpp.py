"""`quantlab llamacpp build`: build llama.cpp's tools (and the runtime library) from the installed runtime's tree,
so the first GGUF command does not spend minutes compiling. `quantlab methods` shows what is built."""

from __future__ import annotations

from typing import Annotated

import typer

from quantlab.cli.app import app
from quantlab.cli.console import emit, steps
from quantlab.errors import OptionError

llamacpp_app = typer.Typer(
    no_args_is_help=True,
    help="llama.cpp's own tools (llama-server, llama-bench, llama-batched-bench, llama-perplexity, llama-imatrix, "
    "llama-quantize), built by quantlab from the llama.cpp tree of the installed llama-cpp-python.",
)
app.add_typer(llamacpp_app, name="llamacpp")


@llamacpp_app.command()
def build(
    backend: Annotated[
        str | None,
        typer.Option(help="cpu | cuda (default: cuda when nvcc is found, else cpu; or QUANTLAB_LLAMACPP_BACKEND)."),
    ] = None,
) -> None:
    """Build the tools once (minutes; progress in the log), or say where the finished build is."""
    from quantlab.llamacpp import build as tools
    from quantlab.util.signals import exit_on_sigterm

    if backend is not None and backend not in ("cpu", "cuda"):
        raise OptionError(f"--backend must be cpu or cuda, not {backend}")
    # `make setup` runs this in the background, where Ctrl-C reaches it as SIGTERM (and SIGINT arrives ignored):
    # both must unwind, so the half-built temporary tree and the build lock are removed
    exit_on_sigterm()
    with steps("llama.cpp tools") as progress:
        done = tools.ensure(progress, backend)
    emit(f"{done.label}: {', '.join(done.tools)} in {done.folder} (built in {done.seconds / 60:.1f} min)")


def tools_rows() -> list[dict]:
    """One row per tool for `quantlab methods`: built or not, where, from which commit, for which backend."""
    from quantlab.errors import QuantlabError
    from quantlab.llamacpp import build as tools

    try:
        found = tools.find()
        reason = "not built yet: quantlab llamacpp build (or it builds on first use)"
    except QuantlabError as exc:
        found, reason = None, str(exc)
    return [
        {
            "tool": name,
            "built": found is not None,
            "path": str(found.tool(name)) if found else "",
            "commit": found.commit if found else "",
            "backend": found.backend if found else "",
            "why_not": "" if found else reason,
        }
        for name in tools.TOOLS
    ]
