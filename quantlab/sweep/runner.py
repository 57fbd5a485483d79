"""`quantlab run RECIPE` (and `quantlab demo`): execute a recipe to completion, resumable after a crash or a kill at
any point.

What makes it resumable, step by step:
- an artifact is built under a temporary name and renamed into place last (`artifact.building`), so a killed
  quantization leaves nothing that looks finished; a finished one is reused while `quantizer.reusable` says it
  is what the cell asks for (same request, same source weights, same tokenizer);
- every measurement is appended to the results file as one fsynced line carrying its cell (recipe, cell key,
  stage) as soon as it is made, and a resumed run skips the (cell, stage) pairs already measured *on the
  artifact this run uses*, on this machine;
- a line cut short by a kill mid-append is dropped before anything else is written (`results.repair_tail`).
So a run killed anywhere and started again ends with every cell's record present exactly once.

`--ray` runs the same cells as tasks on a Ray cluster (quantlab.sweep.ray_runner) through the same start
(`start_run`), adoption and report (`finish_run`), the driver still the results file's only writer.

Matching on the artifact's digest is also what keeps runs apart: a results file committed from another host,
or records of an artifact since rebuilt, are not this run's, so they are neither skipped nor shown in its
report (`quantlab report FILE` shows every host, each row labelled).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from quantlab.artifact import Artifact
from quantlab.bench.config import BenchConfig
from quantlab.errors import QuantlabError, RigError
from quantlab.results import CellRef, Result, read_results, repair_tail
from quantlab.sweep.recipe import Cell, Recipe, RecipeError, cells, load_recipe, rigs_file_of

Progress = Callable[[str], None]
T = TypeVar("T")


def _rig_config(recipe: Recipe, path: Path, config: BenchConfig, device: str) -> BenchConfig:
    """The config with the rig this host measures as: the command line's if it names one, else the first of the
    recipe's rigs that matches this host's hardware."""
    from quantlab.bench.prepare import resolve_rig

    if config.rig is not None:
        resolve_rig(config, device)
        return config
    tried = []
    for entry in recipe.rig_entries():
        candidate = config.model_copy(
            update={
                "rig": entry.name,
                "rigs_file": config.rigs_file or rigs_file_of(recipe, path),
                "price_per_hour": config.price_per_hour or entry.price_per_hour,
            }
        )
        try:
            resolve_rig(candidate, device)
            return candidate
        except RigError as exc:
            tried.append(str(exc))
    names = ", ".join(r.name for r in recipe.rig_entries())
    span = f" spanning {config.tensor_parallel} GPUs" if config.tensor_parallel > 1 else ""
    raise RecipeError(
        f"recipe {path}: rigs: none of {names} is this host ({device}{span}): run it on such a rig, name one with "
        f"--rig, or plan it here with --dry-run ({tried[0]})"
    )


def per_span(plan: list[Cell], resolve: Callable[[int], T]) -> tuple[dict[int, T], dict[int, str]]:
    """`resolve(n)` for every `tensor_parallel` n among the cells: what it gives, and why not for the spans it
    refuses. When it refuses them all, the first refusal is raised (the run fails at once, as with one rig)."""
    usable: dict[int, T] = {}
    refused: dict[int, QuantlabError] = {}
    for gpus in sorted({c.tensor_parallel for c in plan}):
        try:
            usable[gpus] = resolve(gpus)
        except QuantlabError as exc:
            refused[gpus] = exc
    if not usable:
        raise next(iter(refused.values()))
    return usable, {gpus: str(exc) for gpus, exc in refused.items()}


def rig_configs(recipe: Recipe, path: Path, config: BenchConfig, plan: list[Cell]) -> tuple[dict, dict]:
    """Per `tensor_parallel` of the cells: the config (rig of that many GPUs) this host measures them with, and
    why it cannot for the others."""
    from quantlab.bench.prepare import resolve_device

    def resolve(gpus: int) -> BenchConfig:
        asked = config.model_copy(update={"tensor_parallel": gpus})
        return _rig_config(recipe, path, asked, resolve_device(asked))

    return per_span(plan, resolve)


@dataclass
class _Run:
    """One execution: its cells, their artifacts, and the records it can reuse or has made."""

    recipe: Recipe
    results: Path
    progress: Progress
    total: int
    existing: list[Result] = field(default_factory=list)  # the results file's records when the run started
    finished: int = 0
    artifacts: dict[str, Artifact] = field(default_factory=dict)  # cell key → its artifact (path, digest)
    mine: dict[tuple[str, str], Result] = field(default_factory=dict)  # (cell key, stage) → its record

    def step(self, message: str, *, count: bool = False) -> None:
        self.finished += count
        self.progress(f"[{self.finished}/{self.total}] {message}")

    def ref(self, cell: Cell, stage: str) -> CellRef:
        return CellRef(recipe=self.recipe.name, model=cell.model.id, name=cell.name, key=cell.key(), stage=stage)

    def adopt(self, cell: Cell, hosts: set[str] | None = None) -> None:
        """Take the newest records of this cell made on its current artifact, on this machine (or, on a cluster,
        on one of its nodes: `hosts`)."""
        digest = self.artifacts[cell.key()].digest
        for r in self.existing:
            ours = r.cell is not None and (r.cell.recipe, r.cell.key) == (self.recipe.name, cell.key())
            here = r.host.hostname in hosts if hosts is not None else same_machine(r)
            if ours and r.artifact.digest == digest and here:
                self.mine[(cell.key(), r.cell.stage)] = r


def same_machine(record: Result) -> bool:
    from quantlab.env import host_info

    here = host_info()
    return (record.host.hostname, record.host.cpu, record.host.gpus) == (here.hostname, here.cpu, here.gpus)


@dataclass
class RecipeRun:
    results: Path  # the results file; the report of this run is next to it (.md, .html, .csv, plots)
    records: dict[tuple[str, str, str], Result]  # (model id, cell name, stage) → the record this run made or reused
    failed: dict[tuple[str, str, str], str] = field(default_factory=dict)  # (model, cell, stage) → why (--ray)

    def of(self, name: str, stage: str = "bench") -> dict[str, Result]:
        """Model id → the cell's record of that stage."""
        return {model: r for (model, cell, kind), r in self.records.items() if (cell, kind) == (name, stage)}


def run_recipe(
    path: str | Path,
    *,
    results: str | Path | None = None,
    work_dir: str | Path | None = None,
    overrides: dict | None = None,
    progress: Progress = lambda _: None,
    ray: str | bool | None = None,
) -> RecipeRun:
    """Run every cell of the recipe that has no record on its current artifact yet, and write the report of this
    run next to the results file. `ray` (or the recipe's `ray:` section) runs the cells as tasks on a Ray
    cluster: True for RAY_ADDRESS or a local cluster, a string for that cluster's address."""
    from quantlab.paths import cache_dir

    path = Path(path)
    recipe = load_recipe(path)
    plan = cells(recipe, path)
    config = recipe.bench_config(overrides)
    root = Path(work_dir) if work_dir is not None else cache_dir() / "runs" / recipe.name
    results = Path(results) if results is not None else Path("results") / f"{recipe.name}.jsonl"
    if ray or (ray is None and recipe.ray is not None):
        from quantlab.sweep.ray_runner import run_on_ray

        return run_on_ray(path, recipe, plan, config, root.resolve(), results, progress, ray)
    configs, refused = rig_configs(recipe, path, config, plan)
    run = start_run(recipe, plan, config, results, progress)
    failed = {}
    for model in recipe.models:
        mine = [c for c in plan if c.model is model]
        for cell in mine:
            _obtain(run, cell, root)
            run.adopt(cell)
        baseline = next((c for c in mine if c.is_baseline), None)
        for gpus, group_config in configs.items():
            group = [c for c in mine if c.tensor_parallel == gpus]
            if group and (config.quality or config.speed):
                _bench_in_process(run, group, baseline, group_config)
            for cell in (c for c in group if recipe.served(c.name)):
                _bench_served(run, cell, group_config)
        for cell in (c for c in mine if c.tensor_parallel in refused):
            for stage in stages(recipe, cell, config):
                failed[(model.id, cell.name, stage)] = refused[cell.tensor_parallel]
    return finish_run(run, plan, failed)


def stages(recipe: Recipe, cell: Cell, config: BenchConfig) -> list[str]:
    """What a cell measures once its artifact is made."""
    return (["bench"] if config.quality or config.speed else []) + (["load"] if recipe.served(cell.name) else [])


def start_run(recipe: Recipe, plan: list[Cell], config: BenchConfig, results: Path, progress: Progress) -> _Run:
    """The records already in the results file (a torn last line dropped first) and the step count."""
    if repair_tail(results):
        progress(f"dropped a record cut short in {results} (its cell runs again)")
    existing = read_results(results) if results.is_file() and results.stat().st_size else []
    in_process = config.quality or config.speed
    total = len(plan) * (2 if in_process else 1) + sum(recipe.served(c.name) for c in plan)
    return _Run(recipe=recipe, results=results, progress=progress, total=total, existing=existing)


def finish_run(run: _Run, plan: list[Cell], failed: dict | None = None) -> RecipeRun:
    """The report of this run's records, next to the results file."""
    from quantlab.report import select, write_report

    if run.mine:
        write_report(select(list(run.mine.values())), run.results)
    by_key = {c.key(): c for c in plan}
    made = {(by_key[key].model.id, by_key[key].name, stage): r for (key, stage), r in run.mine.items()}
    return RecipeRun(results=run.results, records=made, failed=failed or {})


def _obtain(run: _Run, cell: Cell, root: Path) -> None:
    from quantlab.quantizer import obtain

    run.artifacts[cell.key()] = obtain(
        cell.model.id, cell.spec, cell.artifact_dir(root), log=lambda msg: run.step(f"{cell.name}: {msg}")
    )
    run.step(f"{cell.name}: artifact ready", count=True)


def _bench_in_process(run: _Run, group: list[Cell], baseline: Cell | None, config: BenchConfig) -> None:
    """Bench the cells without a record, against the model's baseline (placed like them: `config`'s
    tensor_parallel); lm-eval tasks only where a transformers model scores them (GGUF cells are benched without)."""
    from quantlab.bench.run import bench
    from quantlab.runtimes import select_runtime

    pending = [c for c in group if (c.key(), "bench") not in run.mine]
    run.finished += len(group) - len(pending)

    def scores_tasks(cell: Cell) -> bool:
        return select_runtime(run.artifacts[cell.key()]).name == "transformers"

    if baseline is not None and not scores_tasks(baseline):
        batches = [(pending, config.model_copy(update={"tasks": None}))]
    else:
        batches = [
            ([c for c in pending if scores_tasks(c)], config),
            ([c for c in pending if not scores_tasks(c)], config.model_copy(update={"tasks": None})),
        ]
    for batch, batch_config in batches:
        if not batch:
            continue
        made = bench(
            [run.artifacts[c.key()].path for c in batch],
            baseline=run.artifacts[baseline.key()].path if baseline else None,
            config=batch_config,
            results_path=run.results,
            cells=[run.ref(c, "bench") for c in batch],
            progress=run.step,
        )
        run.mine.update({(c.key(), "bench"): r for c, r in zip(batch, made, strict=True)})
        run.finished += len(batch)
        run.step(f"benched {', '.join(c.name for c in batch)}")


def _bench_served(run: _Run, cell: Cell, config: BenchConfig) -> None:
    from quantlab.bench.served import bench_load

    if (cell.key(), "load") in run.mine:
        run.finished += 1
        return
    run.mine[(cell.key(), "load")] = bench_load(
        run.artifacts[cell.key()].path,
        config=config,
        results_path=run.results,
        cell=run.ref(cell, "load"),
        progress=run.step,
    )
    run.step(f"{cell.name}: served", count=True)
