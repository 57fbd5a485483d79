"""`quantlab run` and `quantlab demo`: a recipe through the one runner (quantlab.sweep.runner). The demo is the
shipped `recipes/demo.yaml`; both take every bench setting as an override (CLI > recipe > defaults)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from quantlab.bench.config import CELL_FIELDS, BenchConfig
from quantlab.cli.app import app
from quantlab.cli.bench import bench_options
from quantlab.cli.console import console, emit, error, library_output, out_console, steps
from quantlab.cli.options import as_flags
from quantlab.errors import QuantlabError

DEMO_RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "demo.yaml"


def _execute(
    recipe: Path, results: Path | None, work_dir: Path | None, settings: dict, ray: str | bool | None = None
) -> None:
    from pydantic import ValidationError

    from quantlab.errors import BenchError, describe_validation_error
    from quantlab.sweep.recipe import load_recipe
    from quantlab.sweep.runner import run_recipe
    from quantlab.util.signals import exit_on_sigterm

    plan = load_recipe(recipe)
    try:
        plan.bench_config(settings)  # an override that breaks the merged settings fails before any work
    except ValidationError as exc:
        raise BenchError(f"invalid option {as_flags(describe_validation_error(exc), BenchConfig)}") from None
    exit_on_sigterm()
    with steps(f"running {plan.name}") as step:
        done = run_recipe(recipe, results=results, work_dir=work_dir, overrides=settings, progress=step, ray=ray)
    path = done.results
    if done.records:
        emit(path.with_suffix(".md").read_text(encoding="utf-8"))
        console.print(
            f"[green]results[/green] {path}  [green]report[/green] {path.with_suffix('.md')}, "
            f"{path.with_suffix('.html')}"
        )
    for (model, cell, stage), reason in done.failed.items():
        error(f"{model} {cell} {stage}: {reason}")
    if done.failed:
        raise QuantlabError(f"{len(done.failed)} cell stage(s) failed; the others are recorded in {path}")


ResultsOption = Annotated[
    Path | None,
    typer.Option(
        help="Results file the records are appended to. Default: results/<recipe name>.jsonl; the report of this "
        "run (.md, .html, .csv, plots) is written next to it."
    ),
]
RayOption = Annotated[
    bool | None,
    typer.Option(
        "--ray/--no-ray",
        help="Run the cells as tasks on a Ray cluster (pip install 'quantlab\\[ray]'): RAY_ADDRESS's, or a local one "
        "started for this run. --work-dir must be storage every node sees. Same records, resume and report as a "
        "serial run; a cell whose worker died is retried, one that fails is reported and the others go on. "
        "Default: the recipe's `ray:` section decides.",
    ),
]
RayAddressOption = Annotated[
    str | None,
    typer.Option(
        metavar="ADDRESS",
        help="The Ray cluster to run on (implies --ray): auto (the one running on this machine) or the head's "
        "HOST:PORT. Overrides the recipe's ray.address.",
    ),
]
WorkDirOption = Annotated[
    Path | None, typer.Option(help="Where the artifacts go. Default: <quantlab cache>/runs/<recipe name>.")
]


@app.command()
@bench_options(exclude=CELL_FIELDS)
def run(
    recipe: Annotated[Path, typer.Argument(help="A recipe YAML (see recipes/).")],
    settings: dict,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Validate the recipe and print the plan: every cell, its nominal bits per weight, and the "
            "memory-fit verdict on each rig (with --ray: what each cell would reserve on the cluster). Loads no "
            "weights and starts no cluster.",
        ),
    ] = False,
    results: ResultsOption = None,
    work_dir: WorkDirOption = None,
    ray: RayOption = None,
    ray_address: RayAddressOption = None,
) -> None:
    """Execute a recipe (model(s) × methods × bench settings × rigs): quantize every cell (reusing finished
    artifacts), bench each, append the results, render the report of this run. Kill it anywhere and run it
    again: it continues where it stopped. --dry-run validates it and prints the plan instead."""
    if not dry_run:
        _execute(recipe, results, work_dir, settings, ray_address or ray)
        return
    from quantlab.sweep.recipe import load_recipe
    from quantlab.sweep.runner import dry_run

    wants_ray = bool(ray_address or ray or (ray is None and load_recipe(recipe).ray))
    with library_output():
        renderables = dry_run(recipe, settings, ray=wants_ray)
    for renderable in renderables:
        out_console.print(renderable, highlight=False)


@app.command()
@bench_options(exclude=CELL_FIELDS)
def demo(
    settings: dict,
    results: Annotated[
        Path,
        typer.Option(
            help="Results file the demo's records are appended to; the report of this run is written next to it."
        ),
    ] = Path("results/demo.jsonl"),
    work_dir: WorkDirOption = None,
    recipe: Annotated[Path, typer.Option(help="The demo's recipe.")] = DEMO_RECIPE,
) -> None:
    """The whole pipeline on the embedded default model (SmolLM2-135M-Instruct), offline: the cells of
    recipes/demo.yaml (`none` fp32 and bf16, `rtn` w8/w4 g64, GGUF Q4_K_M, FP8_DYNAMIC, bitsandbytes NF4) against
    the fp32 baseline, run like any recipe (`quantlab run`): resumable, and its table is this run's."""
    if not recipe.is_file():
        raise QuantlabError(
            f"the demo recipe {recipe} is missing: it ships in the repository's recipes/ folder (pass --recipe PATH)"
        )
    _execute(recipe, results, work_dir, settings)
