"""The Ray executor (`quantlab run --ray`): a recipe's plan of stages as Ray tasks, the driver the results file's
only writer.

Every stage that may start is submitted as a task (`ray_tasks`) reserving its cell's resources, and runs as the
cluster allows; what may start, resuming, baseline reuse and failures are the orchestration's (`sweep.orchestrate`),
the same as a serial run's, so the records are too, timings and hosts aside. What differs: each bench is its
own task, so it loads the baseline and scores its perplexity windows once per cell, not once per batch. A task
whose worker process or node died is retried (`ray.retries`), one that raised is recorded as failed with its
reason and the others go on. Ctrl-C (or SIGTERM) force-cancels every task: Ray kills their worker processes, and
the servers and workers those started die with them (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path

from quantlab.bench.config import BenchConfig
from quantlab.paths import references_dir
from quantlab.results import Result
from quantlab.sweep import cluster, ray_tasks
from quantlab.sweep.orchestrate import Progress, RecipeRun, Sweep, choose_rig, per_span
from quantlab.sweep.recipe import Cell, Recipe
from quantlab.sweep.shelf import Shelf, ShelfServer
from quantlab.sweep.stages import Stage, plan_stages

POLL_S = 0.5
Placement = tuple[BenchConfig, cluster.Resources]  # a span's settings (its rig) and what its cells reserve


def cluster_rigs(
    recipe: Recipe, path: Path, config: BenchConfig, cells: list[Cell], nodes: list[cluster.Node], settings
) -> tuple[dict[int, Placement], dict[int, str]]:
    """Per `tensor_parallel` of the cells: the first rig (of --rig, else the recipe's) the cluster can host, with
    what a cell reserves there, and why not for the others. None it can host: the run fails before any cell."""
    from quantlab.bench.prepare import check_span
    from quantlab.rigs import get_rig

    def resolve(gpus: int) -> Placement:
        def accept(candidate: BenchConfig) -> cluster.Resources:
            rig = get_rig(candidate.rig, rigs_file=candidate.rigs_file, price_per_hour=candidate.price_per_hour)
            check_span(rig, gpus)
            return cluster.cell_resources(rig, settings, nodes)

        def none_fit(names, refusals) -> cluster.ClusterError:
            reasons = [str(r) for r in refusals]
            return cluster.ClusterError(reasons[0] if len(reasons) == 1 else "no rig fits: " + "; ".join(reasons))

        return choose_rig(recipe, path, config.model_copy(update={"tensor_parallel": gpus}), accept, none_fit)

    return per_span(cells, resolve)


def memory_reservations(recipe: Recipe, path: Path, rig: str) -> dict[str, int]:
    """Cell key → the dry-run's memory-fit estimate on `rig` (weights + KV at memory_fit's batch × ctx): a logical
    reservation Ray places CPU cells by, not a limit. Empty when the model's config cannot be read here, or when
    --rig named a rig the recipe's plan has no column for."""
    from quantlab.errors import QuantlabError
    from quantlab.sweep.plan import memory_plan

    names = [r.name for r in recipe.rig_entries()]
    if rig not in names:
        return {}
    try:
        plan = memory_plan(recipe, path)
    except QuantlabError:
        return {}
    where = names.index(rig)
    return {row.cell.key(): row.footprints[where].needed_bytes for _, _, rows in plan for row in rows}


def dry_run(recipe: Recipe, path: Path, config: BenchConfig, cells: list[Cell]) -> list[str]:
    """What `--ray` would reserve per cell, said without a cluster: per GPU span, the first rig of that many GPUs
    (of --rig, else the recipe's), its GPUs, the CPUs a cell takes (`ray.cpus_per_cell`, else a whole node's on
    the cpu rig) and, on the cpu rig, each cell's memory-fit estimate (the reservation Ray places CPU cells by)."""
    from quantlab.bench.prepare import check_span
    from quantlab.rigs import get_rig

    settings = recipe.ray or cluster.RaySettings()
    lines = []
    for gpus in sorted({c.tensor_parallel for c in cells}):

        def accept(candidate: BenchConfig, gpus: int = gpus):
            rig = get_rig(candidate.rig, rigs_file=candidate.rigs_file, price_per_hour=candidate.price_per_hour)
            check_span(rig, gpus)
            return rig

        def none_fit(names, refusals) -> cluster.ClusterError:
            return cluster.ClusterError("; ".join(str(r) for r in refusals))

        try:
            chosen, rig = choose_rig(recipe, path, config, accept, none_fit)
        except cluster.ClusterError as exc:
            lines.append(f"cells spanning {gpus} GPUs: no rig of the recipe has that many ({exc})")
            continue
        cpus = f"{settings.cpus_per_cell:g} CPU" if settings.cpus_per_cell else None
        if rig.device == "cuda":
            reserve = f"{rig.n_gpus} GPU and {cpus or '1 CPU'}"
        else:
            memory = memory_reservations(recipe, path, chosen.rig)
            estimate = [f"{c.name} {memory[c.key()] / 1e9:.2f} GB" for c in cells if c.key() in memory]
            memory_text = f" and memory ({', '.join(estimate)})" if estimate else ""
            reserve = (cpus or "the CPUs of a whole node") + memory_text
        where = settings.address or "RAY_ADDRESS, else a local cluster"
        span = f"each cell spanning {gpus} GPUs" if gpus > 1 else "each cell"
        lines.append(f"on Ray ({where}): {span} reserves {reserve} (rig {chosen.rig})")
    return lines


def run_on_ray(
    path: Path,
    recipe: Recipe,
    cells: list[Cell],
    config: BenchConfig,
    root: Path,
    results: Path,
    progress: Progress,
    ray_arg: str | bool | None,
) -> RecipeRun:
    import ray

    settings = recipe.ray or cluster.RaySettings()
    if isinstance(ray_arg, str):
        settings = settings.model_copy(update={"address": ray_arg})
    where = cluster.connect(settings.address)
    try:
        nodes = cluster.nodes()
        rigs, refused = cluster_rigs(recipe, path, config, cells, nodes, settings)
        smallest_config, smallest = rigs[min(rigs)]
        cluster.check_work_dir(root, nodes, smallest)
        memory = memory_reservations(recipe, path, smallest_config.rig) if smallest.num_gpus == 0 else {}
        for gpus, (chosen, need) in rigs.items():
            reserve = need.describe() + (" and its memory-fit estimate" if memory else "")
            span = f"cell spanning {gpus} GPUs" if gpus > 1 else "cell"
            progress(f"{where}: {len(nodes)} node(s); each {span} reserves {reserve} (rig {chosen.rig})")
        plan = plan_stages(recipe, cells, {gpus: c for gpus, (c, _) in rigs.items()}, refused)
        sweep = Sweep(recipe, plan, results, progress, hosts={n.host for n in nodes})
        # the nodes share the work dir (checked above) but each has its own references cache
        with ShelfServer(references_dir(), ray.util.get_node_ip_address()) as server:
            progress(f"baseline references shared from this machine's cache at {server.shelf.where}")
            _Driver(sweep, rigs, root, settings, memory, server.shelf).run()
        return sweep.finish()
    finally:
        ray.shutdown()


@dataclass
class _Job:
    stage: Stage
    ref: object
    attempts: int = 0


class _Driver:
    def __init__(
        self,
        sweep: Sweep,
        rigs: dict[int, Placement],
        root: Path,
        settings: cluster.RaySettings,
        memory: dict[str, int],  # cell key → bytes it reserves (CPU rigs)
        shelf: Shelf,
    ) -> None:
        import ray

        self.sweep, self.rigs, self.root, self.memory, self.shelf = sweep, rigs, root, memory, shelf
        self.retries = settings.retries
        self.inbox = ray.remote(num_cpus=0)(ray_tasks.Inbox).remote()
        self.jobs: dict[int, _Job] = {}
        self.ids = itertools.count()

    def run(self) -> None:
        import ray

        try:
            self._submit_ready()
            while self.jobs:
                ready, _ = ray.wait([j.ref for j in self.jobs.values()], num_returns=1, timeout=POLL_S)
                self._drain()
                for ref in ready:
                    job_id = next(i for i, j in self.jobs.items() if j.ref == ref)
                    self._finished(self.jobs.pop(job_id), ref)
                self._submit_ready()
            self._drain()
        except BaseException:
            self._cancel()
            raise

    def _submit_ready(self) -> None:
        for stage in self.sweep.ready():
            cell, sweep = stage.cell, self.sweep
            if stage.kind == "quantize":
                args = (ray_tasks.quantize_task, cell.model.id, cell.spec, str(cell.artifact_dir(self.root)))
            elif stage.kind == "bench":
                base = sweep.baseline_path(stage)
                args = (
                    ray_tasks.bench_task,
                    str(sweep.artifacts[cell.key()].path),
                    str(base) if base else None,
                    stage.config,
                    sweep.ref(stage),
                    sweep.baseline_scores(stage),
                    self.shelf,
                )
            else:
                args = (ray_tasks.load_task, str(sweep.artifacts[cell.key()].path), stage.config, sweep.ref(stage))
            self._submit(stage, *args)

    def _submit(self, stage: Stage, fn, *args) -> None:
        import ray

        self.sweep.start(stage)
        job_id = next(self.ids)
        ctx = ray_tasks.TaskContext(inbox=self.inbox, job=job_id, cwd=os.getcwd())
        _, need = self.rigs.get(stage.cell.tensor_parallel) or self.rigs[min(self.rigs)]
        task = ray.remote(fn).options(
            num_cpus=need.num_cpus,
            num_gpus=need.num_gpus,
            memory=self.memory.get(stage.cell.key()),
            max_retries=self.retries,
            retry_exceptions=False,
            name=f"quantlab {stage.label()}",
        )
        self.jobs[job_id] = _Job(stage=stage, ref=task.remote(ctx, *args))
        self.sweep.step(f"{stage.label()}: queued")

    def _drain(self) -> None:
        import ray

        for job_id, message in ray.get(self.inbox.drain.remote()):
            job = self.jobs.get(job_id)
            if job is None:
                continue
            if message.startswith(ray_tasks.RUNNING):
                job.attempts += 1
                message += f", attempt {job.attempts} of {self.retries + 1}" if job.attempts > 1 else ""
            self.sweep.step(f"{job.stage.label()}: {message}")

    def _finished(self, job: _Job, ref) -> None:
        import ray

        from quantlab.errors import exception_line

        try:
            value = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # the task raised: its own one-line error, or Ray's last line
            self.sweep.fail(job.stage, str(exc.cause) if exc.cause is not None else exception_line(exc, last=True))
            return
        except ray.exceptions.RayError as exc:  # its worker or node died, every retry too
            self.sweep.fail(job.stage, f"{exception_line(exc)} (after {job.attempts} attempt(s))")
            return
        if job.stage.kind == "quantize":
            self.sweep.obtained(job.stage, Path(value["path"]), value["digest"])
        else:
            self.sweep.measured(job.stage, Result.model_validate_json(value))

    def _cancel(self) -> None:
        import ray

        for job in self.jobs.values():
            ray.cancel(job.ref, force=True)
        if self.jobs:
            self.sweep.progress(f"cancelled {len(self.jobs)} running or queued task(s)")
