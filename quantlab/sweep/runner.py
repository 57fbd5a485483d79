"""`quantlab run RECIPE` (and `quantlab demo`): execute a recipe to completion, resumable after a crash or a kill at
any point.

A recipe becomes one plan of stages (`sweep.stages`: obtain each cell's artifact, bench it, serve it under load),
run by one of two executors over the same orchestration (`sweep.orchestrate`): this process, one stage after
another (`sweep.serial`), or a Ray cluster (`sweep.ray_executor`: `--ray`, or the recipe's `ray:` section).

What makes a run resumable, step by step:
- an artifact is built under a temporary name and renamed into place last (`artifact.building`), so a killed
  quantization leaves nothing that looks finished; a finished one is reused while `quantizer.reusable` says it
  is what the cell asks for (same request, same source weights, same tokenizer);
- every measurement is appended to the results file as one fsynced line carrying its cell (recipe, cell key,
  stage) as soon as it is made, and a resumed run skips the (cell, stage) pairs already measured *on the
  artifact this run uses*, on this machine;
- a line cut short by a kill mid-append is dropped before anything else is written (`results.repair_tail`).
So a run killed anywhere and started again ends with every cell's record present exactly once. Two runs on one
work dir at the same time would build the same artifacts side by side: the second is refused.
"""

from __future__ import annotations

from pathlib import Path

from quantlab.bench.config import BenchConfig
from quantlab.errors import QuantlabError
from quantlab.sweep.orchestrate import Progress, RecipeRun, Sweep, choose_rig, per_span
from quantlab.sweep.recipe import Cell, Recipe, RecipeError, cells, load_recipe
from quantlab.sweep.stages import plan_stages

__all__ = ["RecipeRun", "dry_run", "host_rigs", "run_recipe"]


def run_recipe(
    path: str | Path,
    *,
    results: str | Path | None = None,
    work_dir: str | Path | None = None,
    overrides: dict | None = None,
    progress: Progress = lambda _: None,
    ray: str | bool | None = None,
) -> RecipeRun:
    """Run every stage of the recipe that has no record on its current artifact yet, and write the report of this
    run next to the results file. `ray` (or the recipe's `ray:` section) runs the stages as tasks on a Ray
    cluster: True for RAY_ADDRESS or a local cluster, a string for that cluster's address."""
    from quantlab.paths import cache_dir
    from quantlab.util.files import Held, exclusive_or_fail

    path = Path(path)
    recipe = load_recipe(path)
    plan = cells(recipe, path)
    config = recipe.bench_config(overrides)
    root = (Path(work_dir) if work_dir is not None else cache_dir() / "runs" / recipe.name).resolve()
    results = Path(results) if results is not None else Path("results") / f"{recipe.name}.jsonl"
    try:
        with exclusive_or_fail(root / ".quantlab-run.lock"):
            if ray or (ray is None and recipe.ray is not None):
                from quantlab.sweep.ray_executor import run_on_ray

                return run_on_ray(path, recipe, plan, config, root, results, progress, ray)
            return _run_here(path, recipe, plan, config, root, results, progress)
    except Held as exc:
        raise RecipeError(
            f"work dir {root} is in use by another run ({exc}): wait for it, or give this one another --work-dir"
        ) from None


def _run_here(
    path: Path, recipe: Recipe, plan: list[Cell], config: BenchConfig, root: Path, results: Path, progress: Progress
) -> RecipeRun:
    from quantlab.sweep.serial import run_serial

    configs, refused = host_rigs(recipe, path, config, plan)
    sweep = Sweep(recipe, plan_stages(recipe, plan, configs, refused), results, progress)
    run_serial(sweep, root)
    return sweep.finish()


def host_rigs(recipe: Recipe, path: Path, config: BenchConfig, plan: list[Cell]) -> tuple[dict, dict]:
    """Per `tensor_parallel` of the cells: the settings (a rig of that many GPUs matching this host's hardware) it
    is measured with here, and why not for the others."""
    from quantlab.bench.prepare import resolve_device, resolve_rig

    def resolve(gpus: int) -> BenchConfig:
        asked = config.model_copy(update={"tensor_parallel": gpus})
        device = resolve_device(asked)

        def none_fit(names: list[str], refusals: list[QuantlabError]) -> QuantlabError:
            if config.rig:  # the command line named it: its own reason
                return refusals[0]
            span = f" spanning {gpus} GPUs" if gpus > 1 else ""
            return RecipeError(
                f"recipe {path}: rigs: none of {', '.join(names)} is this host ({device}{span}): run it on such a "
                f"rig, name one with --rig, or plan it here with --dry-run ({refusals[0]})"
            )

        chosen, _ = choose_rig(recipe, path, asked, lambda candidate: resolve_rig(candidate, device), none_fit)
        return chosen

    return per_span(plan, resolve)


def dry_run(path: str | Path, overrides: dict | None = None, *, ray: bool = False) -> list:
    """`quantlab run RECIPE --dry-run`: the plan as rich renderables (`sweep.plan`), with `ray` what each cell would
    reserve on a Ray cluster. Loads no weights and starts no cluster."""
    from quantlab.sweep.plan import plan_tables
    from quantlab.sweep.ray_executor import dry_run as on_ray

    path = Path(path)
    recipe = load_recipe(path)
    more = on_ray(recipe, path, recipe.bench_config(overrides), cells(recipe, path)) if ray else []
    return plan_tables(recipe, path, overrides, more=more)
