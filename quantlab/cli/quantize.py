"""`quantlab quantize`: its options are MethodSpec's and Calibration's fields; the methods, schemes and which
backend takes which option come from the method registry, so a new option or scheme needs no edit here."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from quantlab.cli.app import app
from quantlab.cli.console import console, steps
from quantlab.cli.options import build, model_options
from quantlab.errors import SpecError
from quantlab.spec import Calibration, MethodSpec

METHOD_FIELDS = [n for n in MethodSpec.model_fields if n not in ("method", "calibration")]
CALIB_FLAGS = {
    "dataset": "--calib-dataset",
    "n_samples": "--calib-samples",
    "seq_len": "--calib-seq-len",
    "seed": "--seed",
}
FLAGS = {"symmetric": "--symmetric/--asymmetric"}


def _takers(name: str) -> str:
    from quantlab.methods.registry import option_takers

    who = option_takers().get(name)
    return f" Taken by: {', '.join(who)}." if who else ""


def _method_help() -> str:
    from quantlab.methods.registry import method_names, schemes

    by_method = "; ".join(f"{m}: {', '.join(s)}" for m, s in schemes().items() if s)
    return (
        f"Quantization method: {', '.join(method_names())} (see 'quantlab methods'). Schemes (--scheme, default "
        f"first): {by_method}."
    )


@app.command()
@model_options(
    Calibration,
    list(CALIB_FLAGS),
    into="calib",
    panel="Calibration",
    flags=CALIB_FLAGS,
    extra_help=lambda _: " Taken by the calibrated methods (gptq, awq, autoround, gguf --imatrix, fp4 NVFP4).",
)
@model_options(MethodSpec, METHOD_FIELDS, into="options", panel="Method options", flags=FLAGS, extra_help=_takers)
def quantize(
    model: Annotated[
        str,
        typer.Argument(
            help="A Hugging Face hub id, a local HF model directory, or 'default' (the embedded SmolLM2-135M-Instruct)."
        ),
    ],
    method: Annotated[str, typer.Option(help=_method_help())],
    out: Annotated[Path, typer.Option(help="Artifact directory to create (must not exist unless --force).")],
    options: dict,
    calib: dict,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing --out (atomically). --no-force turns it off.")
    ] = False,
    trust_remote_code: Annotated[
        bool,
        typer.Option(
            "--trust-remote-code", help="Allow the model's own Python code to run. --no-trust-remote-code turns it off."
        ),
    ] = False,
    # Hidden negatives keep the `--no-force`/`--no-trust-remote-code` spellings working without a second column
    # of names in the help (which cut the longest option names on an 80-column terminal).
    no_force: Annotated[bool, typer.Option("--no-force", hidden=True)] = False,
    no_trust_remote_code: Annotated[bool, typer.Option("--no-trust-remote-code", hidden=True)] = False,
) -> None:
    """Quantize MODEL into an artifact directory: engine-native files plus the quantlab.json manifest.

    The artifact is built under a hidden temporary name and renamed into place at the end: if anything
    fails (or the process is killed), nothing appears at --out.
    """
    from quantlab.quantizer import quantize as run_quantize

    force, trust_remote_code = force and not no_force, trust_remote_code and not no_trust_remote_code

    if calib:
        options["calibration"] = build(Calibration, calib, SpecError, CALIB_FLAGS)
    spec = build(MethodSpec, {"method": method, **options}, SpecError, FLAGS)
    with steps(f"quantizing {model} with {method}") as report:
        artifact = run_quantize(model, spec, out, force=force, trust_remote_code=trust_remote_code, log=report)
    m = artifact.manifest
    console.print(
        f"[green]wrote[/green] {artifact.path}  {m.spec.method}/{m.spec.backend} {m.spec.label()}  "
        f"{m.format}  {artifact.disk_bytes / 1e6:.1f} MB  in {m.quantize_seconds:.1f} s"
    )
