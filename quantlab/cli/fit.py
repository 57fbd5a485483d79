"""`quantlab fit`: the memory question (quantlab.memfit.MemoryFitQuestion, the same one a recipe's dry-run asks)
for one model on the rigs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from quantlab.cli.app import app
from quantlab.cli.console import library_output, out_console, warning
from quantlab.cli.options import build, model_options
from quantlab.memfit import MemoryFitQuestion


@app.command()
@model_options(MemoryFitQuestion, MemoryFitQuestion.model_fields, into="question", panel="The question")
def fit(
    model: Annotated[
        str,
        typer.Argument(
            help="A local HF model directory, an artifact directory (its measured weight bytes are used), or 'default'."
        ),
    ],
    question: dict,
    rig: Annotated[
        list[str] | None, typer.Option(help="Rig(s) to check; repeat the option. Default: every GPU rig.")
    ] = None,
    weight_bits: Annotated[
        float,
        typer.Option(
            help="Bits per quantized linear weight, scales included (16; 8.0x for FP8/int8; e.g. 4.125 for int4 with "
            "one fp16 scale per 128). Ignored for an artifact."
        ),
    ] = 16.0,
    rigs_file: Annotated[Path | None, typer.Option(help="YAML file adding or overriding rigs.")] = None,
    kv_measured: Annotated[
        Path | None,
        typer.Option(
            help="Results JSONL holding a measurement of this artifact with --kv-dtype (bench --kv-cache-dtype): "
            "its KV bytes per token, as the engine allocated them, replace the arithmetic."
        ),
    ] = None,
) -> None:
    """Does MODEL fit on each rig at --batch × --ctx? Weights + KV cache (arithmetic from the config) against
    the rig's memory × --utilization; the rest is left for activations and the engine's buffers."""
    from quantlab import memfit
    from quantlab.artifact import MANIFEST, load_artifact
    from quantlab.errors import SpecError
    from quantlab.models import resolve_model
    from quantlab.rigs import load_rigs

    asked = build(MemoryFitQuestion, question, SpecError)
    if not 0 < weight_bits < math.inf:  # NaN fails both comparisons
        raise SpecError(f"--weight-bits must be a positive number, not {weight_bits}")
    rigs = load_rigs(rigs_file)
    unknown = [name for name in rig or [] if name not in rigs]
    if unknown:
        raise SpecError(f"unknown rig {unknown[0]!r}; see 'quantlab rigs'")
    chosen = [rigs[name] for name in rig] if rig else [r for r in rigs.values() if r.device == "cuda"]
    measured = artifact = None
    path = Path(model)
    with library_output():
        if (path / MANIFEST).is_file():
            artifact = load_artifact(path)
            measured = artifact.manifest.weight_bytes
            arch = memfit.architecture_of_artifact(artifact)
        else:
            arch = memfit.architecture_of(path if path.is_dir() else Path(resolve_model(model).path))
    kv = _measured_kv(kv_measured, artifact, asked.kv_dtype) if kv_measured else None
    table, note = memfit.fit_table(
        model, arch, asked, chosen, weight_bits=weight_bits, measured_weight_bytes=measured, measured_kv=kv
    )
    out_console.print(table)
    out_console.print(note)


def _measured_kv(results: Path, artifact, kv_dtype: str) -> tuple[float, str]:
    """The newest KV allocation measured for this artifact with this KV type, and where it was read."""
    from quantlab import memfit
    from quantlab.errors import SpecError
    from quantlab.results import read_results

    if artifact is None:
        raise SpecError("--kv-measured needs an artifact directory as MODEL (its measurements are per artifact)")
    found = []
    for r in read_results(results, warn=warning):
        kv = (r.load.kv_allocation if r.load else None) or r.runtime.kv_allocation
        if (
            r.artifact is not None  # an external server's record (--target) has no artifact to match
            and r.artifact.digest == artifact.digest
            and kv is not None
            and kv.type_k == kv.type_v
            and memfit.kv_dtype_of(kv.type_k) == kv_dtype
        ):
            found.append((r.timestamp, kv.bytes_per_token, f"{kv.source}, run {r.run_id}"))
    if not found:
        raise SpecError(f"{results} holds no KV measurement of {artifact.path.name} with a {kv_dtype} cache")
    _, per_token, where = max(found)
    return per_token, where
