"""`quantlab tune`: its search options are TuneRequest's fields, its calibration options `quantize`'s; the held-out
check is the ordinary bench, so its record reads like any other."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from quantlab.cli.app import app
from quantlab.cli.console import console, emit, steps
from quantlab.cli.options import build, model_options
from quantlab.cli.quantize import CALIB_FLAGS
from quantlab.errors import SpecError
from quantlab.spec import Calibration
from quantlab.tune.tuner import TuneRequest

VERIFY_TOKENS = 16384


@app.command()
@model_options(Calibration, list(CALIB_FLAGS), into="calib", panel="Calibration", flags=CALIB_FLAGS)
@model_options(TuneRequest, list(TuneRequest.model_fields), into="search", panel="Search")
def tune(
    model: Annotated[str, typer.Argument(help="A hub id, a local HF model directory, or 'default'.")],
    out: Annotated[Path, typer.Option(help="Artifact directory to create (must not exist unless --force).")],
    search: dict,
    calib: dict,
    no_verify: Annotated[
        bool,
        typer.Option(
            "--no-verify",
            help="Skip the held-out check: by default the artifact is measured on the test split (never seen by "
            "the search) against --baseline, and the record appended to --results.",
        ),
    ] = False,
    baseline: Annotated[
        Path | None,
        typer.Option(help="Baseline artifact of the held-out check; default: the model's F16 GGUF (made once)."),
    ] = None,
    verify_tokens: Annotated[int, typer.Option(help="Tokens of the held-out check.", min=2)] = VERIFY_TOKENS,
    results: Annotated[Path, typer.Option(help="JSONL file the held-out record is appended to.")] = Path(
        "results/tune.jsonl"
    ),
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out (atomically).")] = False,
    work_dir: Annotated[
        Path | None,
        typer.Option(help="Folder of the measurements kept between runs; default: 'tune' in the quantlab cache."),
    ] = None,
) -> None:
    """The best GGUF of MODEL under --budget (or the smallest under --max-kld): measure each tensor group's KLD at
    each candidate type on calibration text, allocate types, quantize with llama-quantize, check the size, and
    verify quality on held-out text. Measurements are kept in the quantlab cache: a killed tune resumes."""
    from quantlab.tune.tuner import tune as run_tune

    calibration = build(Calibration, {"dataset": "default", **calib}, SpecError, CALIB_FLAGS)
    request = build(TuneRequest, search, SpecError)
    with steps(f"tuning {model}") as report:
        artifact = run_tune(model, out, request, calibration, report, force=force, root=work_dir)
        verify = not no_verify
        records = _verify(artifact, model, calibration, baseline, verify_tokens, results, report) if verify else []
    m = artifact.manifest
    console.print(
        f"[green]wrote[/green] {artifact.path}  {m.gguf.bits_per_weight} bpw  {m.weight_bytes / 1e6:,.2f} MB  "
        f"predicted KLD {m.gguf.tune.predicted_kld:.5f}"
    )
    if records:
        from quantlab import report as render

        emit(render.markdown(records, title="quantlab tune: held-out check"))
        console.print(f"[green]appended[/green] the held-out record to {results}")


def _verify(artifact, model: str, calibration: Calibration, baseline, tokens: int, results: Path, report) -> list:
    from quantlab.bench import BenchConfig, bench
    from quantlab.quantizer import obtain
    from quantlab.spec import MethodSpec
    from quantlab.tune.tuner import baseline_dir

    if baseline is None:
        where = baseline_dir(artifact.manifest.source.content_sha256)
        baseline = obtain(model, MethodSpec(method="gguf", scheme="F16"), where, log=report).path
    config = BenchConfig(dataset=calibration.dataset, max_tokens=tokens, speed=False)
    report("held-out check: the test split against the baseline")
    return bench([artifact.path], baseline=baseline, config=config, results_path=results, progress=report)
