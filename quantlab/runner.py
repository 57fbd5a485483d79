"""`quantlab run RECIPE`: execute a recipe to completion, resumable after a crash or a kill at any point.

What makes it resumable, step by step:
- an artifact is built under a temporary name and renamed into place last (`artifact.building`), so a killed
  quantization leaves nothing that looks finished; a finished one is reused while `quantizer.reusable` says it
  is what the cell asks for (same request, same source weights, same tokenizer);
- every measurement is appended to the results file as one fsynced line carrying its cell (recipe, cell key,
  stage) as soon as it is made, and a resumed run skips the (cell, stage) pairs already there;
- a line cut short by a kill mid-append is dropped before anything else is written (`results.repair_tail`).
So a run killed anywhere and started again ends with every cell's record present exactly once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from quantlab.errors import RigError
from quantlab.recipes import Cell, Recipe, RecipeError, cells, load_recipe, rigs_file_of
from quantlab.results import CellRef, Result, read_results, repair_tail

Progress = Callable[[str], None]


def _host_rig(recipe: Recipe, path: Path, device: str):
    """The recipe's rig that matches this host: measurements are labelled and priced with it."""
    from quantlab.bench.run import resolve_rig

    tried = []
    for rig in recipe.rig_entries():
        try:
            return resolve_rig(
                rig.name, device, rigs_file=rigs_file_of(recipe, path), price_per_hour=rig.price_per_hour
            ), rig
        except RigError as exc:
            tried.append(str(exc))
    raise RecipeError(
        f"recipe {path}: rigs: none of {', '.join(r.name for r in recipe.rig_entries())} is this host "
        f"({device}): run it on such a rig, or plan it here with --dry-run ({tried[0]})"
    )


def _ref(recipe: Recipe, cell: Cell, stage: str) -> CellRef:
    return CellRef(recipe=recipe.name, model=cell.model.id, name=cell.name, key=cell.key(), stage=stage)


def run_recipe(
    path: str | Path,
    *,
    results: str | Path | None = None,
    work_dir: str | Path | None = None,
    progress: Progress = lambda _: None,
) -> Path:
    """Run every cell of the recipe that has no record yet; the results file path."""
    from quantlab.bench.run import BenchOptions, bench
    from quantlab.bench.served import LoadOptions, bench_load
    from quantlab.paths import cache_dir
    from quantlab.quantizer import quantize, reusable
    from quantlab.runtimes import default_device, select_runtime

    path = Path(path)
    recipe = load_recipe(path)
    plan = cells(recipe, path)
    device = default_device()
    rig, rig_entry = _host_rig(recipe, path, device)
    rigs_file = rigs_file_of(recipe, path)
    b = recipe.bench
    options = BenchOptions(
        dataset=b.dataset,
        ctx=b.ctx,
        max_tokens=b.max_tokens,
        batch_sizes=b.batch_sizes,
        prompt_tokens=b.prompt_tokens,
        new_tokens=b.new_tokens,
        warmup=b.warmup,
        repeats=b.repeats,
        rig=rig.name,
        rigs_file=rigs_file,
        price_per_hour=rig_entry.price_per_hour,
        quality=b.quality,
        speed=b.speed,
        tasks=b.tasks,
        task_limit=b.task_limit,
        device=device,
    )
    options.check()
    root = Path(work_dir) if work_dir is not None else cache_dir() / "runs" / recipe.name
    results = Path(results) if results is not None else Path("results") / f"{recipe.name}.jsonl"
    if repair_tail(results):
        progress(f"dropped a record cut short in {results} (its cell runs again)")
    done = {
        (r.cell.key, r.cell.stage)
        for r in (read_results(results) if results.is_file() and results.stat().st_size else [])
        if r.cell is not None and r.cell.recipe == recipe.name
    }
    stages = (["bench"] if b.quality or b.speed else []) + (["load"] if b.concurrency else [])
    total = len(plan) * (2 if "bench" in stages else 1) + sum(recipe.served(c.name) for c in plan)
    finished = [0]

    def step(message: str, count: bool = True) -> None:
        if count:
            finished[0] += 1
        progress(f"[{finished[0]}/{total}] {message}")

    for model in recipe.models:
        mine = [c for c in plan if c.model is model]
        artifacts = {}
        for cell in mine:
            out = cell.artifact_dir(root)
            artifact = reusable(out, model.id, cell.spec)
            if artifact is None:
                step(f"{cell.name}: quantizing", count=False)
                artifact = quantize(
                    model.id,
                    cell.spec,
                    out,
                    force=True,
                    log=lambda msg, name=cell.name: step(f"{name}: {msg}", count=False),
                )
            artifacts[cell.name] = artifact
            step(f"{cell.name}: artifact ready")
        baseline = next((c for c in mine if c.is_baseline), None)
        if "bench" in stages:
            pending = [c for c in mine if (c.key(), "bench") not in done]
            finished[0] += len(mine) - len(pending)
            # lm-eval scores transformers models only: GGUF cells are benched without tasks
            no_tasks = replace(options, tasks=None)
            with_tasks = [c for c in pending if select_runtime(artifacts[c.name]).name == "transformers"]
            groups = [(with_tasks, options), ([c for c in pending if c not in with_tasks], no_tasks)]
            if baseline is not None and select_runtime(artifacts[baseline.name]).name != "transformers":
                groups = [(pending, no_tasks)]
            for group, group_options in groups:
                if not group:
                    continue
                bench(
                    [artifacts[c.name].path for c in group],
                    baseline=artifacts[baseline.name].path if baseline else None,
                    options=group_options,
                    results_path=results,
                    cells=[_ref(recipe, c, "bench") for c in group],
                    progress=lambda msg: step(msg, count=False),
                )
                finished[0] += len(group)
                progress(f"[{finished[0]}/{total}] benched {', '.join(c.name for c in group)}")
        if "load" in stages:
            load_options = LoadOptions(
                concurrency=b.concurrency,
                requests=b.requests,
                prompt_tokens=b.prompt_tokens,
                output_tokens=b.new_tokens,
                dataset=b.dataset,
                device=device,
                rig=rig.name,
                rigs_file=rigs_file,
                price_per_hour=rig_entry.price_per_hour,
            )
            for cell in [c for c in mine if recipe.served(c.name)]:
                if (cell.key(), "load") in done:
                    finished[0] += 1
                    continue
                bench_load(
                    artifacts[cell.name].path,
                    options=load_options,
                    results_path=results,
                    cell=_ref(recipe, cell, "load"),
                    progress=lambda msg: step(msg, count=False),
                )
                step(f"{cell.name}: served")
    render(results)
    return results


def render(results: Path) -> list[Path]:
    """The report next to the results, from the results only: Markdown, HTML (plots embedded), the tradeoff
    table as CSV, and each plot as a PNG."""
    from quantlab.report import plots, tables

    records: list[Result] = tables.select(read_results(results))
    outputs = {
        results.with_suffix(".md"): tables.markdown(records).encode(),
        results.with_suffix(".html"): tables.html(records).encode(),
        results.with_suffix(".csv"): tables.csv(records).encode(),
    }
    outputs |= {results.with_name(f"{results.stem}-{name}.png"): png for name, png in plots.render_all(records).items()}
    for target, data in outputs.items():
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
    return list(outputs)
