"""`quantlab reference`: a baseline's reference file, made once for a token stream and read by every bench."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from quantlab.bench.config import BenchConfig
from quantlab.cli.app import app
from quantlab.cli.console import console, steps
from quantlab.cli.options import build, model_options
from quantlab.errors import BenchError

# What the stream and the baseline's load depend on; the baseline always runs its format's own kernel, so no
# --kernel (it would be accepted and ignored).
SETTINGS = ("dataset", "ctx", "max_tokens", "dtype", "runtime", "device", "tensor_parallel", "kv_cache_dtype")


@app.command()
@model_options(BenchConfig, SETTINGS, into="settings", panel="Stream and load settings (as for bench)")
def reference(
    baseline: Annotated[Path, typer.Argument(help="The baseline artifact, usually the 'none' one of the model.")],
    settings: dict,
) -> None:
    """Write BASELINE's reference file: its log-probabilities on every scored position of the bench's token
    stream (float32, exact), so that 'quantlab bench ART --baseline FILE' compares against it without loading the
    baseline. The file goes to $QUANTLAB_REFERENCES (default: the quantlab cache's references folder) under a name
    made from what it depends on (stream, ctx, protocol, baseline digest, how the baseline is loaded); when it is
    there already, nothing is loaded. Prints its path."""
    from quantlab.bench.run import reference as make

    config = build(BenchConfig, settings, BenchError)
    with steps(f"reference of {baseline}") as step:
        made = make(baseline, config=config, progress=step)
    h = made.header
    size = made.path.stat().st_size
    console.print(
        f"[green]reference[/green] {made.path}  {h.windows} windows × ctx {h.ctx}, vocab {h.vocab}, {size / 1e6:.1f} MB"
    )
    print(made.path)
